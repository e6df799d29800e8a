//! Shared test helpers: frames built with etherparse's `PacketBuilder`, and checks that parse
//! results back with etherparse and recompute every checksum from scratch (never with this
//! crate's own checksum code).

#![allow(dead_code)]

use etherparse::{
    Icmpv4Header, IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Header, Ipv4HeaderSlice, PacketBuilder,
    PacketHeaders, TcpHeader, UdpHeader,
};
use xvs_forwarders::Egress;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const DIRECTOR_IN_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x01];
pub const DIRECTOR_OUT_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x02];
pub const REAL_SERVER_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x21];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x6e, 0, 0, 0, 0xfe];

pub const CLIENT: [u8; 4] = [203, 0, 113, 7];
pub const VIP: [u8; 4] = [192, 0, 2, 10];
pub const REAL_SERVER: [u8; 4] = [10, 1, 0, 21];
pub const DIRECTOR: [u8; 4] = [10, 1, 0, 1];
pub const ROUTER: [u8; 4] = [198, 51, 100, 1];

/// Egress toward the real servers' segment.
pub fn to_real_server(mtu: u16) -> Egress {
    Egress {
        src_mac: DIRECTOR_OUT_MAC,
        dst_mac: REAL_SERVER_MAC,
        mtu,
    }
}

/// Egress toward the clients' gateway.
pub fn to_client(mtu: u16) -> Egress {
    Egress {
        src_mac: DIRECTOR_IN_MAC,
        dst_mac: GATEWAY_MAC,
        mtu,
    }
}

/// The IPv4 header fields a test chooses.
#[derive(Debug, Clone, Copy)]
pub struct Ip {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub dscp: u8,
    pub ecn: u8,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub options: &'static [u8],
}

impl Ip {
    pub fn new(src: [u8; 4], dst: [u8; 4]) -> Self {
        Ip {
            src,
            dst,
            ttl: 64,
            ident: 0x3456,
            dont_fragment: true,
            dscp: 0,
            ecn: 0,
            options: &[],
        }
    }

    pub fn header(&self) -> Ipv4Header {
        let mut header = Ipv4Header::new(0, self.ttl, IpNumber::TCP, self.src, self.dst).unwrap();
        header.identification = self.ident;
        header.dont_fragment = self.dont_fragment;
        header.dscp = IpDscp::try_new(self.dscp).unwrap();
        header.ecn = IpEcn::try_new(self.ecn).unwrap();
        header.options = self.options.try_into().unwrap();
        header
    }

    fn headers(&self) -> IpHeaders {
        IpHeaders::Ipv4(self.header(), Default::default())
    }
}

/// A TCP segment; `flags` uses the crate's bit values (SYN = 0x02, ACK = 0x10, ...).
pub fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    ip: &Ip,
    ports: (u16, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = TcpHeader::new(ports.0, ports.1, 0x0102_0304, 29200);
    tcp.fin = flags & 0x01 != 0;
    tcp.syn = flags & 0x02 != 0;
    tcp.rst = flags & 0x04 != 0;
    tcp.psh = flags & 0x08 != 0;
    tcp.ack = flags & 0x10 != 0;
    tcp.acknowledgment_number = if tcp.ack { 0x0a0b_0c0d } else { 0 };
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ip(ip.headers())
        .tcp_header(tcp);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// A UDP datagram (with a computed checksum).
pub fn udp_frame(macs: ([u8; 6], [u8; 6]), ip: &Ip, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ip(ip.headers())
        .udp(ports.0, ports.1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// An ICMP message of any type (checksum computed).
pub fn icmp_frame(
    macs: ([u8; 6], [u8; 6]),
    ip: &Ip,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ip(ip.headers())
        .icmpv4_raw(kind, code, rest);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// An IPIP frame: `outer` header (protocol 4) around the `inner` datagram bytes.
pub fn ipip_frame(macs: ([u8; 6], [u8; 6]), outer: &Ip, inner: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1).ip(outer.headers());
    let mut out = Vec::new();
    builder.write(&mut out, IpNumber::IPV4, inner).unwrap();
    out
}

/// Zeroes the UDP checksum of a frame built by `udp_frame` ("no checksum").
pub fn without_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    frame[l4 + 6] = 0;
    frame[l4 + 7] = 0;
    frame
}

/// The IP datagram of a frame (after the 14-byte Ethernet header).
pub fn datagram(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// A buffer with `headroom` bytes (0xee) before `frame` and `tailroom` bytes after.
pub fn buffer(frame: &[u8], headroom: usize, tailroom: usize) -> Vec<u8> {
    let mut buf = vec![0xee; headroom];
    buf.extend_from_slice(frame);
    buf.resize(headroom + frame.len() + tailroom, 0xee);
    buf
}

/// Asserts `actual` and `expected` are the same frame: every header field (compared through
/// etherparse's parsed headers, checksums included) and every byte.
pub fn assert_same_frame(actual: &[u8], expected: &[u8]) {
    let actual_headers = PacketHeaders::from_ethernet_slice(actual).expect("actual parses");
    let expected_headers = PacketHeaders::from_ethernet_slice(expected).expect("expected parses");
    assert_eq!(actual_headers.link, expected_headers.link, "ethernet");
    assert_eq!(actual_headers.net, expected_headers.net, "ip");
    assert_eq!(
        actual_headers.transport, expected_headers.transport,
        "transport"
    );
    assert_eq!(actual, expected, "bytes");
}

/// Recomputes and checks every checksum of an Ethernet/IPv4 frame from scratch with etherparse:
/// the IPv4 header, then TCP/UDP/ICMP over the whole payload; for IPIP the inner datagram too;
/// for ICMP errors the quoted IPv4 header as well.
pub fn verify_checksums(frame: &[u8]) {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "ethertype");
    verify_datagram(&frame[14..]);
}

fn verify_datagram(datagram: &[u8]) {
    let ip = Ipv4HeaderSlice::from_slice(datagram).expect("ipv4 header");
    let header = ip.to_header();
    assert_eq!(
        header.calc_header_checksum(),
        header.header_checksum,
        "ipv4 header checksum"
    );
    let end = usize::from(header.total_len);
    assert!(end <= datagram.len(), "total length within the datagram");
    let payload = &datagram[header.header_len()..end];
    match header.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(payload).expect("tcp header");
            let expected = tcp.calc_checksum_ipv4(&header, data).unwrap();
            assert_eq!(tcp.checksum, expected, "tcp checksum");
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(payload).expect("udp header");
            if udp.checksum != 0 {
                let expected = udp.calc_checksum_ipv4(&header, data).unwrap();
                assert_eq!(udp.checksum, expected, "udp checksum");
            }
        }
        IpNumber::ICMP => {
            // Summed over the raw bytes with etherparse's word summer: re-encoding the parsed
            // type would drop bytes 4..8 that some types leave "unused".
            let (icmp, _) = Icmpv4Header::from_slice(payload).expect("icmp header");
            let mut zeroed = payload.to_vec();
            zeroed[2] = 0;
            zeroed[3] = 0;
            let expected = etherparse::checksum::Sum16BitWords::new()
                .add_slice(&zeroed)
                .ones_complement()
                .to_be();
            assert_eq!(icmp.checksum, expected, "icmp checksum");
            let quoted = &payload[8..];
            if matches!(payload[0], 3 | 11) && quoted.len() >= 20 {
                let quoted_ip = Ipv4HeaderSlice::from_slice(quoted).expect("quoted header");
                let quoted_header = quoted_ip.to_header();
                assert_eq!(
                    quoted_header.calc_header_checksum(),
                    quoted_header.header_checksum,
                    "quoted ipv4 header checksum"
                );
            }
        }
        IpNumber::IPV4 => verify_datagram(payload),
        other => panic!("unexpected protocol {other:?}"),
    }
}

/// A client -> VIP frame for the "common case first" equivalence tests: `proto` 0 a TCP
/// ACK, 1 a UDP datagram, else an ICMP echo request.
pub fn client_frame(proto: u8, ip: &Ip, payload: &[u8]) -> Vec<u8> {
    let macs = (CLIENT_MAC, DIRECTOR_IN_MAC);
    match proto {
        0 => tcp_frame(macs, ip, (40000, 80), 0x10, payload),
        1 => udp_frame(macs, ip, (40000, 53), payload),
        _ => icmp_frame(macs, ip, 8, 0, [0, 1, 0, 1], payload),
    }
}

/// The view of `frame` that `parse_common` gives (`fast`) or `parse`.
pub fn view_of(
    frame: &xvs_forwarders::Frame<'_>,
    fast: bool,
) -> Option<xvs_forwarders::PacketView> {
    if fast {
        xvs_forwarders::parse_common(frame.data())
    } else {
        xvs_forwarders::parse(frame).ok()
    }
}
