//! The views against etherparse, an independent implementation: fields round-trip, checked
//! constructors refuse what does not fit, full checksums match, and every incremental patch
//! equals a full recomputation.

use core::net::Ipv4Addr;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;

use super::*;
use crate::Reason;

/// A frame with a TCP or UDP payload and correct checksums, by etherparse.
fn frame(udp: bool, src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
    let mut out = Vec::new();
    if udp {
        let b = ip.udp(ports.0, ports.1);
        b.write(&mut out, payload).unwrap();
    } else {
        let b = ip.tcp(ports.0, ports.1, 7, 1024).ack(9).psh();
        b.write(&mut out, payload).unwrap();
    }
    out
}

/// etherparse's verdict on every checksum of `frame`.
fn etherparse_checksums_ok(frame: &[u8]) -> bool {
    let sliced = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4")
    };
    let header = ip.header().to_header();
    let ip_ok = header.header_checksum == header.calc_header_checksum();
    let l4_ok = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let h = tcp.to_header();
            h.checksum == h.calc_checksum_ipv4(&header, tcp.payload()).unwrap()
        }
        Some(TransportSlice::Udp(udp)) => {
            let h = udp.to_header();
            h.checksum == 0 || h.checksum == h.calc_checksum_ipv4(&header, udp.payload()).unwrap()
        }
        _ => panic!("no transport"),
    };
    ip_ok && l4_ok
}

#[test]
fn checked_constructors_refuse_short_buffers() {
    assert_eq!(
        EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(),
        Reason::Truncated
    );
    assert!(EthernetFrame::new_checked(&[0u8; 14][..]).is_ok());

    let mut ip = [0u8; 24];
    ip[0] = 0x45;
    ip[3] = 24;
    assert!(Ipv4Packet::new_checked(&ip[..]).is_ok());
    assert_eq!(
        Ipv4Packet::new_checked(&ip[..19]).unwrap_err(),
        Reason::Truncated
    );
    let mut bad = ip;
    bad[0] = 0x65;
    assert_eq!(
        Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
        Reason::BadIpVersion
    );
    bad[0] = 0x44;
    assert_eq!(
        Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
        Reason::BadIpHeaderLength
    );
    bad[0] = 0x46;
    assert_eq!(
        Ipv4Packet::new_checked(&bad[..23]).unwrap_err(),
        Reason::Truncated
    );
    bad = ip;
    bad[3] = 25;
    assert_eq!(
        Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
        Reason::BadIpTotalLength
    );
    bad[3] = 19;
    assert_eq!(
        Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
        Reason::BadIpTotalLength
    );

    let mut tcp = [0u8; 24];
    tcp[12] = 6 << 4;
    assert!(TcpPacket::new_checked(&tcp[..]).is_ok());
    assert_eq!(
        TcpPacket::new_checked(&tcp[..19]).unwrap_err(),
        Reason::Truncated
    );
    assert_eq!(
        TcpPacket::new_checked(&tcp[..23]).unwrap_err(),
        Reason::BadTcpHeader
    );
    tcp[12] = 4 << 4;
    assert_eq!(
        TcpPacket::new_checked(&tcp[..]).unwrap_err(),
        Reason::BadTcpHeader
    );

    let mut udp = [0u8; 10];
    udp[5] = 10;
    assert!(UdpPacket::new_checked(&udp[..]).is_ok());
    assert_eq!(
        UdpPacket::new_checked(&udp[..7]).unwrap_err(),
        Reason::Truncated
    );
    assert_eq!(
        UdpPacket::new_checked(&udp[..9]).unwrap_err(),
        Reason::BadUdpLength
    );
    udp[5] = 7;
    assert_eq!(
        UdpPacket::new_checked(&udp[..]).unwrap_err(),
        Reason::BadUdpLength
    );

    assert_eq!(
        IcmpPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
        Reason::Truncated
    );
    assert!(IcmpPacket::new_checked(&[0u8; 8][..]).is_ok());
}

#[test]
fn ethernet_round_trips() {
    let mut buf = [0u8; 20];
    let mut eth = EthernetFrame::new_checked(&mut buf[..]).unwrap();
    eth.set_dst_addr([1, 2, 3, 4, 5, 6]);
    eth.set_src_addr([7, 8, 9, 10, 11, 12]);
    eth.set_ethertype(ethertype::IPV4);
    eth.payload_mut()[0] = 0x45;
    assert_eq!(eth.dst_addr(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(eth.src_addr(), [7, 8, 9, 10, 11, 12]);
    assert_eq!((eth.ethertype(), eth.payload().len()), (0x0800, 6));
    let header = etherparse::Ethernet2Header::from_slice(&buf).unwrap().0;
    assert_eq!(header.destination, [1, 2, 3, 4, 5, 6]);
    assert_eq!(header.source, [7, 8, 9, 10, 11, 12]);
    assert_eq!(header.ether_type, etherparse::EtherType::IPV4);
}

#[test]
fn icmp_round_trips_and_checksums_as_etherparse() {
    let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).icmpv4_echo_request(0x1234, 7);
    let mut out = Vec::new();
    b.write(&mut out, b"ping payload").unwrap();
    let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.protocol(), protocol::ICMP);
    let message = ip.payload().to_vec();
    let mut icmp = IcmpPacket::new_checked(message.clone()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (icmp_type::ECHO_REQUEST, 0)
    );
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 7));
    assert_eq!(icmp.data(), b"ping payload");
    icmp.set_checksum(0);
    assert!(!icmp.verify_checksum());
    icmp.fill_checksum();
    assert_eq!(icmp.as_ref(), &message[..]);

    let mut error = [0u8; 36];
    let mut icmp = IcmpPacket::new_checked(&mut error[..]).unwrap();
    icmp.set_msg_type(icmp_type::DEST_UNREACHABLE);
    icmp.set_msg_code(icmp_type::CODE_FRAG_NEEDED);
    icmp.set_next_hop_mtu(1480);
    icmp.data_mut()[0] = 0x45;
    icmp.fill_checksum();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.rest_of_header(), icmp.next_hop_mtu()), (1480, 1480));
    icmp.set_rest_of_header(0xdead_beef);
    assert_eq!(icmp.rest_of_header(), 0xdead_beef);
    icmp.set_next_hop_mtu(1480);
    icmp.set_rest_of_header(1480);
    icmp.fill_checksum();
    let (header, _) = etherparse::Icmpv4Header::from_slice(&error).unwrap();
    assert_eq!(
        header.icmp_type,
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1480 }
        )
    );
    assert_eq!(header.checksum, header.icmp_type.calc_checksum(&error[8..]));
}

proptest! {
    #[test]
    fn ipv4_round_trips_and_fills_the_checksum_etherparse_computes(
        tos: u8, ident: u16, df: bool, mf: bool, offset in 0u16..8191, ttl: u8, proto: u8,
        src: u32, dst: u32, options in 0usize..=10, payload in 0usize..64,
    ) {
        let header_len = 20 + options * 4;
        let total = header_len + payload;
        let mut buf = vec![0u8; total + 3];
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.set_version(4);
        ip.set_header_len(header_len);
        ip.set_tos(tos);
        ip.set_total_len(total as u16);
        ip.set_ident(ident);
        ip.set_dont_frag(df);
        ip.set_more_frags(mf);
        ip.set_frag_offset(offset * 8);
        ip.set_ttl(ttl);
        ip.set_protocol(proto);
        ip.set_src_addr(Ipv4Addr::from_bits(src));
        ip.set_dst_addr(Ipv4Addr::from_bits(dst));
        ip.fill_checksum();
        prop_assert!(ip.verify_checksum());
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!((ip.version(), ip.header_len(), ip.tos()), (4, header_len, tos));
        prop_assert_eq!((ip.total_len(), ip.ident()), (total as u16, ident));
        prop_assert_eq!((ip.dont_frag(), ip.more_frags(), ip.frag_offset()), (df, mf, offset * 8));
        prop_assert_eq!((ip.ttl(), ip.protocol()), (ttl, proto));
        prop_assert_eq!((ip.src_addr().to_bits(), ip.dst_addr().to_bits()), (src, dst));
        prop_assert_eq!((ip.header().len(), ip.payload().len()), (header_len, payload));
        let theirs = etherparse::Ipv4HeaderSlice::from_slice(&buf).unwrap().to_header();
        prop_assert_eq!(theirs.header_checksum, theirs.calc_header_checksum());
        prop_assert_eq!(theirs.header_checksum, ip.checksum());
        prop_assert_eq!(theirs.time_to_live, ttl);
        buf[12] ^= 0x10;
        prop_assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn transport_checksums_verify_and_fill_as_etherparse(
        udp: bool, src: [u8; 4], dst: [u8; 4], ports: (u16, u16),
        payload in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let frame = frame(udp, src, dst, ports, &payload);
        let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
        prop_assert!(ip.verify_checksum());
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        prop_assert_eq!((s.octets(), d.octets()), (src, dst));
        let mut segment = ip.payload().to_vec();
        if udp {
            let mut udp = UdpPacket::new_checked(&mut segment[..]).unwrap();
            prop_assert!(udp.verify_checksum(s, d));
            prop_assert_eq!((udp.src_port(), udp.dst_port()), ports);
            prop_assert_eq!(udp.payload(), &payload[..]);
            let stored = udp.checksum();
            udp.set_checksum(0);
            prop_assert!(udp.verify_checksum(s, d), "0 means none");
            udp.fill_checksum(s, d);
            prop_assert_eq!(udp.checksum(), stored);
            udp.set_checksum(stored ^ 0x0101);
            prop_assert!(!udp.verify_checksum(s, d));
        } else {
            let mut tcp = TcpPacket::new_checked(&mut segment[..]).unwrap();
            prop_assert!(tcp.verify_checksum(s, d));
            prop_assert_eq!((tcp.src_port(), tcp.dst_port()), ports);
            prop_assert_eq!((tcp.seq_number(), tcp.ack_number(), tcp.window_len()), (7, 9, 1024));
            prop_assert!(tcp.ack() && tcp.psh() && !tcp.syn() && !tcp.fin() && !tcp.rst());
            prop_assert_eq!(tcp.payload(), &payload[..]);
            let stored = tcp.checksum();
            tcp.set_checksum(0);
            tcp.fill_checksum(s, d);
            prop_assert_eq!(tcp.checksum(), stored);
            prop_assert!(!tcp.verify_checksum(s, Ipv4Addr::from_bits(d.to_bits() ^ 1)));
        }
    }

    #[test]
    fn tcp_fields_round_trip(
        ports: (u16, u16), seq: u32, ack: u32, words in 5usize..=15, flags: u8, window: u16,
        urgent: u16,
    ) {
        let mut buf = vec![0u8; words * 4];
        let mut tcp = TcpPacket::new_unchecked(&mut buf[..]);
        tcp.set_src_port(ports.0);
        tcp.set_dst_port(ports.1);
        tcp.set_seq_number(seq);
        tcp.set_ack_number(ack);
        tcp.set_header_len(words * 4);
        tcp.set_flags(flags);
        tcp.set_window_len(window);
        tcp.set_urgent_at(urgent);
        let tcp = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!((tcp.src_port(), tcp.dst_port()), ports);
        prop_assert_eq!((tcp.seq_number(), tcp.ack_number()), (seq, ack));
        prop_assert_eq!((tcp.header_len(), tcp.flags()), (words * 4, flags));
        prop_assert_eq!((tcp.window_len(), tcp.urgent_at()), (window, urgent));
        prop_assert_eq!(tcp.syn(), flags & tcp::flags::SYN != 0);
        prop_assert_eq!(tcp.urg(), flags & tcp::flags::URG != 0);
        let theirs = etherparse::TcpHeader::from_slice(&buf).unwrap().0;
        prop_assert_eq!((theirs.sequence_number, theirs.acknowledgment_number), (seq, ack));
        prop_assert_eq!(theirs.syn, flags & tcp::flags::SYN != 0);
        prop_assert_eq!(theirs.window_size, window);
    }

    /// The NAT rewrite and the forwarding step, done with the patching setters, leave every
    /// checksum equal to a full recomputation (etherparse's and the views' own).
    #[test]
    fn incremental_patches_equal_full_recomputation(
        udp: bool, src: [u8; 4], dst: [u8; 4], ports: (u16, u16), new_dst: u32, new_src: u32,
        new_ports: (u16, u16), ttl in 2u8..=255, zero_udp_checksum: bool,
        payload in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut frame = frame(udp, src, dst, ports, &payload);
        let mut ip = Ipv4Packet::new_checked(&mut frame[ETHERNET_HEADER_LEN..]).unwrap();
        ip.set_ttl(ttl);
        ip.fill_checksum();
        ip.decrement_ttl();
        prop_assert_eq!(ip.ttl(), ttl - 1);
        let old_dst = ip.set_dst_addr_patching(Ipv4Addr::from_bits(new_dst));
        let old_src = ip.set_src_addr_patching(Ipv4Addr::from_bits(new_src));
        prop_assert_eq!((old_src.octets(), old_dst.octets()), (src, dst));
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        prop_assert!(ip.verify_checksum());
        let full = {
            let mut copy = Ipv4Packet::new_unchecked(ip.header().to_vec());
            copy.fill_checksum();
            copy.checksum()
        };
        prop_assert_eq!(ip.checksum(), full);
        let segment = ip.payload_mut();
        if udp {
            let mut udp = UdpPacket::new_checked(segment).unwrap();
            if zero_udp_checksum {
                udp.set_checksum(0);
            }
            udp.patch_pseudo_header(old_dst, d);
            udp.patch_pseudo_header(old_src, s);
            udp.set_dst_port_patching(new_ports.1);
            udp.set_src_port_patching(new_ports.0);
            if zero_udp_checksum {
                prop_assert_eq!(udp.checksum(), 0, "none stays none");
            } else {
                prop_assert!(udp.verify_checksum(s, d));
                let patched = udp.checksum();
                udp.fill_checksum(s, d);
                prop_assert_eq!(patched, udp.checksum());
            }
        } else {
            let mut tcp = TcpPacket::new_checked(segment).unwrap();
            tcp.patch_pseudo_header(old_dst, d);
            tcp.patch_pseudo_header(old_src, s);
            tcp.set_dst_port_patching(new_ports.1);
            tcp.set_src_port_patching(new_ports.0);
            prop_assert!(tcp.verify_checksum(s, d));
            let patched = tcp.checksum();
            tcp.fill_checksum(s, d);
            prop_assert_eq!(patched, tcp.checksum());
        }
        prop_assert!(etherparse_checksums_ok(&frame));
    }

    /// The `_noting` variants with one delta give the checksum the patching setters give.
    #[test]
    fn one_delta_equals_patching_step_by_step(header: [u8; 20], ttl in 2u8..=255, addr: u32) {
        let mut a = header;
        a[0] = 0x45;
        a[8] = ttl;
        Ipv4Packet::new_unchecked(&mut a).fill_checksum();
        let mut b = a;
        let mut stepwise = Ipv4Packet::new_unchecked(&mut a);
        stepwise.decrement_ttl();
        stepwise.set_dst_addr_patching(Ipv4Addr::from_bits(addr));
        let mut once = Ipv4Packet::new_unchecked(&mut b);
        let mut delta = Delta::default();
        once.decrement_ttl_noting(&mut delta);
        once.set_dst_addr_noting(Ipv4Addr::from_bits(addr), &mut delta);
        once.apply_checksum_delta(delta);
        prop_assert!(once.verify_checksum());
        prop_assert_eq!(a, b);
    }

    /// Nothing `new_checked` accepts makes an accessor panic.
    #[test]
    fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(ip) = Ipv4Packet::new_checked(&bytes[..]) {
            let _ = (ip.header(), ip.payload(), ip.verify_checksum(), ip.pseudo_header_sum());
        }
        if let Ok(tcp) = TcpPacket::new_checked(&bytes[..]) {
            let _ = (tcp.payload(), tcp.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
        }
        if let Ok(udp) = UdpPacket::new_checked(&bytes[..]) {
            let _ = (udp.payload(), udp.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
        }
        if let Ok(icmp) = IcmpPacket::new_checked(&bytes[..]) {
            let _ = (icmp.data(), icmp.verify_checksum(), icmp.rest_of_header());
        }
        if let Ok(eth) = EthernetFrame::new_checked(&bytes[..]) {
            let _ = (eth.payload(), eth.ethertype(), eth.src_addr(), eth.dst_addr());
        }
    }
}

#[test]
fn pseudo_header_sum_is_what_the_transport_checksum_starts_from() {
    let frame = frame(false, [10, 0, 0, 1], [10, 0, 0, 2], (1, 2), b"abc");
    let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
    let sum = crate::checksum::sum_words(ip.payload(), ip.pseudo_header_sum());
    assert_eq!(crate::checksum::fold(sum), 0xffff);
}
