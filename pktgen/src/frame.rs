//! Frames the generator sends: Ethernet + IPv4 (or IPv6) + TCP or UDP, written from a template.
//!
//! A [`Template`] holds one complete frame (fixed addresses, size, TCP flags) and the one's
//! complement sums of its IPv4 header and of its L4 pseudo-header + segment *with the fields
//! that vary per packet zeroed*: the client address, the client port and the payload's
//! timestamp. Writing a packet is then a copy of the template plus a few adds per checksum,
//! exact (the receiving kernel verifies them) and cheap enough that the in-memory benchmarks
//! measure the pipeline rather than the generator.
//!
//! Payload: when there is room, the first 12 bytes are [`STAMP_MAGIC`] and a 64-bit
//! `CLOCK_MONOTONIC` time in nanoseconds (big-endian), which the receiver turns into latency.
//! The rest is zeros. A 64-byte TCP frame has 6 bytes of payload: no stamp.
//!
//! IPv6 frames ([`Addressing::ipv6`]) keep the flow space's IPv4 addresses as the low 32
//! bits of the client's IPv6 address, so one flow space serves both families and the
//! per-packet checksum work stays the same (IPv6 has no header checksum). Their smallest
//! frame is 74 bytes with TCP (78 on the wire): a "64-byte" IPv6 frame is that.
//!
//! Headers are written and read through xvs-forwarders' [`wire`] views, the ones the
//! director rewrites with, and the sums are its [`checksum`] module's.

use std::net::{Ipv4Addr, Ipv6Addr};

use xvs_forwarders::checksum;
use xvs_forwarders::wire::{
    self, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, ethertype, protocol,
    tcp_flags,
};

/// Ethernet header length.
pub const ETH_LEN: usize = wire::ETHERNET_HEADER_LEN;
/// IPv4 header length (no options).
pub const IPV4_LEN: usize = wire::IPV4_MIN_HEADER_LEN;
/// IPv6 header length (no extension headers).
pub const IPV6_LEN: usize = wire::IPV6_HEADER_LEN;
/// TCP header length (no options).
pub const TCP_LEN: usize = wire::TCP_MIN_HEADER_LEN;
/// UDP header length.
pub const UDP_LEN: usize = wire::UDP_HEADER_LEN;
/// Marks a payload that carries a send time.
pub const STAMP_MAGIC: [u8; 4] = *b"XVSP";
/// Bytes of payload a stamp takes.
pub const STAMP_LEN: usize = 12;
/// Smallest Ethernet frame without its 4-byte FCS (64 bytes on the wire).
pub const MIN_FRAME: usize = 60;
/// Largest frame without FCS for a 1500-byte MTU.
pub const MAX_FRAME: usize = 1514;
/// The FCS the NIC appends, counted in on-wire sizes ("64-byte frames").
pub const FCS_LEN: usize = 4;

/// What kind of packet a template makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP SYN: opens a connection.
    Syn,
    /// TCP ACK (with payload when the size allows): a packet of an open connection.
    Ack,
    /// A UDP datagram.
    Udp,
}

impl Kind {
    fn l4_len(self) -> usize {
        match self {
            Kind::Syn | Kind::Ack => TCP_LEN,
            Kind::Udp => UDP_LEN,
        }
    }

    fn ip_protocol(self) -> u8 {
        match self {
            Kind::Syn | Kind::Ack => protocol::TCP,
            Kind::Udp => protocol::UDP,
        }
    }
}

/// Fixed header fields of every frame of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// Source MAC (the sender's interface).
    pub src_mac: [u8; 6],
    /// Destination MAC (the director's interface, or the next hop toward it).
    pub dst_mac: [u8; 6],
    /// Destination address (the VIP).
    pub dst: Ipv4Addr,
    /// Destination port (the virtual service's).
    pub dst_port: u16,
    /// IPv6 frames instead of IPv4 ones: `dst` is then ignored. See the module documentation.
    pub ipv6: Option<Ipv6Addressing>,
}

/// The addresses of IPv6 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Addressing {
    /// Destination address (the VIP).
    pub dst: Ipv6Addr,
    /// The clients' network: a client's address is this with its low 32 bits replaced by the
    /// flow's IPv4 address.
    pub client_net: Ipv6Addr,
}

impl Ipv6Addressing {
    /// The IPv6 address of the client the flow space calls `v4`.
    pub fn client(&self, v4: Ipv4Addr) -> Ipv6Addr {
        Ipv6Addr::from_bits(
            (self.client_net.to_bits() & !u128::from(u32::MAX)) | u128::from(v4.to_bits()),
        )
    }
}

/// One frame shape, ready to be stamped out per packet. See the module documentation.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    kind: Kind,
    /// Sum of the IPv4 header with source address and checksum zeroed (0 for IPv6).
    ip_sum: u64,
    /// Where the L4 header starts (after Ethernet and the IP header).
    l4: usize,
    /// IPv6 frames: the client address's high 96 bits, written per packet with the low 32.
    client_net6: Option<Ipv6Addr>,
    /// Sum of pseudo-header + L4 header + payload with source address, source port,
    /// checksum and stamp zeroed.
    l4_sum: u64,
    stamp_at: Option<usize>,
}

impl Template {
    /// A `frame_len`-byte frame (without FCS; at least [`MIN_FRAME`], at most [`MAX_FRAME`])
    /// of `kind`. Source address and port are filled per packet.
    pub fn new(kind: Kind, addressing: &Addressing, frame_len: usize) -> Template {
        let ip_len = if addressing.ipv6.is_some() {
            IPV6_LEN
        } else {
            IPV4_LEN
        };
        let l4 = ETH_LEN + ip_len;
        let frame_len = frame_len.clamp(MIN_FRAME.max(l4 + kind.l4_len()), MAX_FRAME);
        let mut b = vec![0u8; frame_len];
        let mut ethernet = EthernetFrame::new_unchecked(&mut b[..]);
        ethernet.set_dst_addr(addressing.dst_mac);
        ethernet.set_src_addr(addressing.src_mac);
        let l4_len = frame_len - l4;
        if let Some(v6) = &addressing.ipv6 {
            ethernet.set_ethertype(ethertype::IPV6);
            let mut ip = Ipv6Packet::new_unchecked(&mut b[ETH_LEN..]);
            ip.set_version(6);
            ip.set_payload_len(l4_len as u16);
            ip.set_next_header(kind.ip_protocol());
            ip.set_hop_limit(64);
            ip.set_src_addr(v6.client(Ipv4Addr::UNSPECIFIED));
            ip.set_dst_addr(v6.dst);
        } else {
            ethernet.set_ethertype(ethertype::IPV4);
            let mut ip = Ipv4Packet::new_unchecked(&mut b[ETH_LEN..]);
            ip.set_version(4);
            ip.set_header_len(IPV4_LEN);
            ip.set_total_len((frame_len - ETH_LEN) as u16);
            ip.set_ident(1);
            ip.set_dont_frag(true); // as Linux sends TCP and most UDP
            ip.set_ttl(64);
            ip.set_protocol(kind.ip_protocol());
            ip.set_dst_addr(addressing.dst);
        }
        match kind {
            Kind::Syn | Kind::Ack => {
                let mut segment = TcpPacket::new_unchecked(&mut b[l4..]);
                segment.set_dst_port(addressing.dst_port);
                segment.set_seq_number(1);
                segment.set_header_len(TCP_LEN);
                if kind == Kind::Syn {
                    segment.set_flags(tcp_flags::SYN);
                } else {
                    segment.set_ack_number(1);
                    segment.set_flags(tcp_flags::ACK);
                }
                segment.set_window_len(64240);
            }
            Kind::Udp => {
                let mut datagram = UdpPacket::new_unchecked(&mut b[l4..]);
                datagram.set_dst_port(addressing.dst_port);
                datagram.set_len(l4_len as u16);
            }
        }
        let payload_at = l4 + kind.l4_len();
        let stamp_at = (frame_len - payload_at >= STAMP_LEN).then_some(payload_at);
        if let Some(at) = stamp_at {
            b[at..at + 4].copy_from_slice(&STAMP_MAGIC);
        }
        // The pseudo-header with the source address (IPv6: its low 32 bits) still zero.
        let (ip_sum, pseudo_sum) = if addressing.ipv6.is_some() {
            let ip = Ipv6Packet::new_unchecked(&b[ETH_LEN..]);
            (0, ip.pseudo_header_sum(kind.ip_protocol(), l4_len as u32))
        } else {
            let ip = Ipv4Packet::new_unchecked(&b[ETH_LEN..]);
            (checksum::sum_words(ip.header(), 0), ip.pseudo_header_sum())
        };
        let l4_sum = checksum::sum_words(&b[l4..], pseudo_sum);
        Template {
            bytes: b,
            kind,
            ip_sum,
            l4,
            client_net6: addressing.ipv6.map(|v6| v6.client(Ipv4Addr::UNSPECIFIED)),
            l4_sum,
            stamp_at,
        }
    }

    /// The frame length (without FCS).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a template is at least [`MIN_FRAME`] bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The kind of packet.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether frames of this template carry a timestamp.
    pub fn stamps(&self) -> bool {
        self.stamp_at.is_some()
    }

    /// Writes the frame from `src:sport` (IPv6: the client [`Ipv6Addressing::client`] makes
    /// of `src`) into `out` (at least [`Template::len`] bytes) with
    /// send time `stamp_ns` (ignored without room for it); returns the frame length.
    #[inline]
    pub fn write(&self, out: &mut [u8], src: Ipv4Addr, sport: u16, stamp_ns: u64) -> usize {
        let n = self.bytes.len();
        let out = &mut out[..n];
        out.copy_from_slice(&self.bytes);
        let src_bits = u64::from(src.to_bits());
        let addr_sum = (src_bits >> 16) + (src_bits & 0xffff);
        let (headers, payload) = out.split_at_mut(self.l4);
        if let Some(net) = self.client_net6 {
            let mut ip = Ipv6Packet::new_unchecked(&mut headers[ETH_LEN..]);
            ip.set_src_addr(Ipv6Addr::from_bits(
                net.to_bits() | u128::from(src.to_bits()),
            ));
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut headers[ETH_LEN..]);
            ip.set_src_addr(src);
            ip.set_checksum(!checksum::fold(self.ip_sum + addr_sum));
        }
        let mut l4_sum = self.l4_sum + addr_sum + u64::from(sport);
        if let Some(at) = self.stamp_at {
            let at = at - self.l4;
            payload[at + 4..at + 12].copy_from_slice(&stamp_ns.to_be_bytes());
            l4_sum += (stamp_ns >> 48) + ((stamp_ns >> 32) & 0xffff);
            l4_sum += ((stamp_ns >> 16) & 0xffff) + (stamp_ns & 0xffff);
        }
        let sum = !checksum::fold(l4_sum);
        match self.kind {
            Kind::Syn | Kind::Ack => {
                let mut segment = TcpPacket::new_unchecked(payload);
                segment.set_src_port(sport);
                segment.set_checksum(sum);
            }
            Kind::Udp => {
                let mut datagram = UdpPacket::new_unchecked(payload);
                datagram.set_src_port(sport);
                // 0 means "no checksum" in UDP.
                datagram.set_checksum(if sum == 0 { 0xffff } else { sum });
            }
        }
        n
    }
}

/// What a receiver reads back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// IP protocol (6 or 17).
    pub protocol: u8,
    /// The send time carried in the payload, if any.
    pub stamp_ns: Option<u64>,
}

/// Reads a TCP or UDP over IPv4 frame (also one that arrives IPIP-encapsulated, as TUN
/// sends it); `None` for anything else.
pub fn parse(frame: &[u8]) -> Option<Received> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != ethertype::IPV4 {
        return None;
    }
    let mut ip = Ipv4Packet::new_checked(ethernet.into_payload()).ok()?;
    while ip.protocol() == protocol::IPIP {
        ip = Ipv4Packet::new_checked(ip.into_payload()).ok()?;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (ports, payload) = match ip.protocol() {
        protocol::TCP => {
            let segment = TcpPacket::new_checked(ip.into_payload()).ok()?;
            (
                (segment.src_port(), segment.dst_port()),
                segment.into_payload(),
            )
        }
        protocol::UDP => {
            let datagram = UdpPacket::new_checked(ip.into_payload()).ok()?;
            (
                (datagram.src_port(), datagram.dst_port()),
                datagram.into_payload(),
            )
        }
        _ => return None,
    };
    let stamp_ns = match payload.split_first_chunk::<STAMP_LEN>() {
        Some((stamp, _)) if stamp[..4] == STAMP_MAGIC => stamp[4..]
            .first_chunk::<8>()
            .map(|t| u64::from_be_bytes(*t)),
        _ => None,
    };
    Some(Received {
        src: (src, ports.0),
        dst: (dst, ports.1),
        protocol: ip.protocol(),
        stamp_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn addressing() -> Addressing {
        Addressing {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: Ipv4Addr::new(192, 168, 0, 11),
            dst_port: 80,
            ipv6: None,
        }
    }

    /// Recomputes every checksum of `frame` from scratch with etherparse.
    fn assert_checksums(frame: &[u8]) {
        let sliced = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4")
        };
        let header = ip.header().to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "IPv4"
        );
        let payload = ip.payload().payload;
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let h = tcp.to_header();
                let want = h.calc_checksum_ipv4(&header, tcp.payload()).unwrap();
                assert_eq!(h.checksum, want, "TCP");
            }
            Some(TransportSlice::Udp(udp)) => {
                let h = udp.to_header();
                let want = h.calc_checksum_ipv4(&header, &payload[UDP_LEN..]).unwrap();
                assert_eq!(h.checksum, want, "UDP");
            }
            other => panic!("no transport: {other:?}"),
        }
    }

    #[test]
    fn every_kind_and_size_has_correct_checksums_for_any_source() {
        let mut out = [0u8; MAX_FRAME];
        for kind in [Kind::Syn, Kind::Ack, Kind::Udp] {
            for len in [MIN_FRAME, 64, 590, 1000, MAX_FRAME] {
                let t = Template::new(kind, &addressing(), len);
                for (i, src) in [
                    Ipv4Addr::new(10, 0, 0, 1),
                    Ipv4Addr::new(255, 255, 255, 254),
                    Ipv4Addr::new(192, 168, 0, 100),
                ]
                .into_iter()
                .enumerate()
                {
                    let sport = [1024, 65535, 40000][i];
                    let stamp = [0, u64::MAX, 0x0123_4567_89ab_cdef][i];
                    let n = t.write(&mut out, src, sport, stamp);
                    assert_eq!(n, len);
                    assert_checksums(&out[..n]);
                }
            }
        }
    }

    #[test]
    fn the_frame_says_what_was_asked() {
        let mut out = [0u8; MAX_FRAME];
        let t = Template::new(Kind::Syn, &addressing(), 100);
        let n = t.write(&mut out, Ipv4Addr::new(10, 1, 2, 3), 5555, 42);
        let sliced = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("TCP")
        };
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (5555, 80));
        let got = parse(&out[..n]).unwrap();
        assert_eq!(got.src, (Ipv4Addr::new(10, 1, 2, 3), 5555));
        assert_eq!(got.dst, (Ipv4Addr::new(192, 168, 0, 11), 80));
        assert_eq!(got.stamp_ns, Some(42));
        let ack = Template::new(Kind::Ack, &addressing(), MIN_FRAME);
        assert!(!ack.stamps(), "6 bytes of payload: no room for a stamp");
        let mut small = [0u8; MIN_FRAME];
        let n = ack.write(&mut small, Ipv4Addr::new(10, 1, 2, 3), 5555, 42);
        assert_eq!(parse(&small[..n]).unwrap().stamp_ns, None);
    }

    #[test]
    fn sizes_are_clamped_to_ethernet() {
        assert_eq!(Template::new(Kind::Udp, &addressing(), 10).len(), MIN_FRAME);
        assert_eq!(
            Template::new(Kind::Udp, &addressing(), 9000).len(),
            MAX_FRAME
        );
    }

    #[test]
    fn parse_sees_through_ipip() {
        let mut inner = [0u8; 200];
        let t = Template::new(Kind::Udp, &addressing(), 100);
        let n = t.write(&mut inner, Ipv4Addr::new(10, 0, 0, 9), 999, 7);
        let mut outer = inner[..ETH_LEN].to_vec();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((n - ETH_LEN + 20) as u16).to_be_bytes());
        ip[9] = 4;
        outer.extend_from_slice(&ip);
        outer.extend_from_slice(&inner[ETH_LEN..n]);
        let got = parse(&outer).unwrap();
        assert_eq!(got.src, (Ipv4Addr::new(10, 0, 0, 9), 999));
        assert_eq!((got.protocol, got.stamp_ns), (17, Some(7)));
        assert_eq!(parse(&outer[..20]), None);
    }
}
