//! Parsing a received Ethernet/IPv6 frame into [`PacketView6`], the IPv6 counterpart of
//! [`crate::PacketView`]: validated once at the edge, read by value downstream.
//!
//! The IPv4 parser and its view are untouched (the IPv4 fast path is instruction-counted);
//! the dataplane dispatches on the EtherType and calls [`parse6`] for 0x86dd.

use core::net::Ipv6Addr;

use crate::field::{eth, icmpv6, ipv6, tcp, udp};
use crate::parse::TcpFlags;
use crate::wire::Ipv6Packet;
use crate::{Frame, L4, Reason};

/// A validated Ethernet/IPv6 frame, described by value. `Copy`, no borrow of the frame.
/// `l4` reuses the IPv4 view's [`L4`]; its `Icmp` variant holds ICMPv6 types here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketView6 {
    /// Offset of the IPv6 header in the frame (14: untagged Ethernet).
    pub ip_offset: u16,
    /// Offset of the TCP/UDP/ICMPv6 header (after any extension headers).
    pub l4_offset: u16,
    /// IPv6 payload length; bytes past `ip_offset + 40 + payload_len` are padding.
    pub payload_len: u16,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Hop limit as received.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
    /// Transport header fields.
    pub l4: L4,
}

impl PacketView6 {
    /// Upper-layer protocol (6 TCP, 17 UDP, 58 ICMPv6).
    #[inline]
    pub fn protocol(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => ipv6::NEXT_TCP,
            L4::Udp { .. } => ipv6::NEXT_UDP,
            L4::Icmp { .. } => ipv6::NEXT_ICMPV6,
        }
    }

    /// (source port, destination port) for TCP and UDP.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            L4::Icmp { .. } => None,
        }
    }

    /// TCP flags, if TCP.
    #[inline]
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// True for the ICMPv6 errors IPVS relays (`ip_vs_in_icmp_v6`: every error type;
    /// RFC 4443 assigns 1 to 4). Never answered with another ICMPv6 error (RFC 4443 2.4 e).
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        matches!(
            self.l4,
            L4::Icmp {
                kind: icmpv6::DEST_UNREACHABLE..=icmpv6::PARAM_PROBLEM,
                ..
            }
        )
    }

    /// Length of the IPv6 datagram (fixed header included).
    #[inline]
    pub fn datagram_len(&self) -> usize {
        ipv6::HEADER_LEN + usize::from(self.payload_len)
    }

    /// End of the IPv6 datagram in the frame (start of any Ethernet padding).
    #[inline]
    pub fn ip_end(&self) -> usize {
        usize::from(self.ip_offset) + self.datagram_len()
    }

    /// Refuses a view that does not fit `frame`.
    #[inline]
    pub(crate) fn check_fits(&self, frame: &Frame<'_>) -> Result<(), Reason> {
        let header_end = usize::from(self.ip_offset) + ipv6::HEADER_LEN;
        let l4_offset = usize::from(self.l4_offset);
        if self.ip_end() <= frame.len() && header_end <= l4_offset && l4_offset <= self.ip_end() {
            Ok(())
        } else {
            Err(Reason::ViewMismatch)
        }
    }
}

/// Parses an Ethernet II / IPv6 / extension headers / {TCP, UDP, ICMPv6} frame.
///
/// Refuses, with the reason to count: truncated headers, other EtherTypes (`NotIpv6`),
/// a bad version or payload length, extension headers the walker refuses (see
/// `wire::walk_extension_headers`), fragments (the IPv4 policy, see `fragments`), other
/// protocols, a TCP data offset or UDP length that does not fit, a UDP checksum of 0.
/// Never panics, whatever the bytes.
#[inline]
pub fn parse6(frame: &Frame<'_>) -> Result<PacketView6, Reason> {
    parse6_bytes(frame.data())
}

/// [`parse6`] on a plain byte slice holding the frame.
pub fn parse6_bytes(data: &[u8]) -> Result<PacketView6, Reason> {
    if data.len() < eth::HEADER_LEN {
        return Err(Reason::Truncated);
    }
    if u16::from_be_bytes([data[12], data[13]]) != eth::ETHERTYPE_IPV6 {
        return Err(Reason::NotIpv6);
    }
    let ip = Ipv6Packet::new_checked(&data[eth::HEADER_LEN..])?;
    let upper = ip.upper_layer()?;
    upper.fragmentation.admit()?;
    let payload = ip.payload();
    let l4_bytes = &payload[upper.offset..];
    let l4 = parse_l4(upper.protocol, l4_bytes)?;
    Ok(PacketView6 {
        ip_offset: eth::HEADER_LEN as u16,
        l4_offset: (eth::HEADER_LEN + ipv6::HEADER_LEN + upper.offset) as u16,
        payload_len: ip.payload_len(),
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        hop_limit: ip.hop_limit(),
        traffic_class: ip.traffic_class(),
        flow_label: ip.flow_label(),
        l4,
    })
}

/// The IPv6 frame nearly every packet is, read with the fewest steps (the fast path's
/// counterpart of [`crate::parse_common`]): TCP or UDP as the fixed header's own next header
/// (no extension header, hence no fragment) and headers that fit. `None` for anything else,
/// which [`parse6`] then decides about (and refuses, with its reason, if it must). Where this
/// returns a view it is exactly the view [`parse6_bytes`] returns (a test holds the two to it).
#[inline(always)]
pub fn parse_common6(data: &[u8]) -> Option<PacketView6> {
    const IP: usize = eth::HEADER_LEN;
    const L4: usize = IP + ipv6::HEADER_LEN;
    let head = data.first_chunk::<{ L4 + udp::HEADER_LEN }>()?;
    if u16::from_be_bytes([head[12], head[13]]) != eth::ETHERTYPE_IPV6 {
        return None;
    }
    let ip = Ipv6Packet::new_unchecked(&head[IP..L4]);
    let protocol = ip.next_header();
    let payload_len = ip.payload_len();
    let l4_end = L4 + usize::from(payload_len);
    if ip.version() != 6
        || !matches!(protocol, ipv6::NEXT_TCP | ipv6::NEXT_UDP)
        || l4_end > data.len()
    {
        return None;
    }
    let l4 = parse_l4(protocol, &data[L4..l4_end]).ok()?;
    Some(PacketView6 {
        ip_offset: IP as u16,
        l4_offset: L4 as u16,
        payload_len,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        hop_limit: ip.hop_limit(),
        traffic_class: ip.traffic_class(),
        flow_label: ip.flow_label(),
        l4,
    })
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn parse_l4(protocol: u8, l4_bytes: &[u8]) -> Result<L4, Reason> {
    match protocol {
        ipv6::NEXT_TCP => {
            if l4_bytes.len() < tcp::MIN_HEADER_LEN {
                return Err(Reason::Truncated);
            }
            let header_len = usize::from(l4_bytes[tcp::DATA_OFFSET] >> 4) * 4;
            if header_len < tcp::MIN_HEADER_LEN || header_len > l4_bytes.len() {
                return Err(Reason::BadTcpHeader);
            }
            Ok(L4::Tcp {
                src_port: be16(l4_bytes, tcp::SRC_PORT.start),
                dst_port: be16(l4_bytes, tcp::DST_PORT.start),
                flags: TcpFlags(l4_bytes[tcp::FLAGS]),
            })
        }
        ipv6::NEXT_UDP => {
            if l4_bytes.len() < udp::HEADER_LEN {
                return Err(Reason::Truncated);
            }
            let length = usize::from(be16(l4_bytes, udp::LENGTH.start));
            if length < udp::HEADER_LEN || length > l4_bytes.len() {
                return Err(Reason::BadUdpLength);
            }
            if be16(l4_bytes, udp::CHECKSUM.start) == 0 {
                return Err(Reason::UdpZeroChecksum);
            }
            Ok(L4::Udp {
                src_port: be16(l4_bytes, udp::SRC_PORT.start),
                dst_port: be16(l4_bytes, udp::DST_PORT.start),
            })
        }
        ipv6::NEXT_ICMPV6 => {
            if l4_bytes.len() < icmpv6::HEADER_LEN {
                return Err(Reason::Truncated);
            }
            let kind = l4_bytes[icmpv6::TYPE];
            let echo_id = match kind {
                icmpv6::ECHO_REQUEST | icmpv6::ECHO_REPLY => be16(l4_bytes, icmpv6::ECHO_ID.start),
                _ => 0,
            };
            Ok(L4::Icmp {
                kind,
                code: l4_bytes[icmpv6::CODE],
                echo_id,
            })
        }
        _ => Err(Reason::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const VIP: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn build(kind: u8) -> Vec<u8> {
        let ip =
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(CLIENT, VIP, 64);
        let mut out = Vec::new();
        match kind {
            6 => ip
                .tcp(40000, 80, 1, 1024)
                .syn()
                .write(&mut out, &[])
                .unwrap(),
            17 => ip.udp(40001, 53).write(&mut out, b"q").unwrap(),
            _ => ip
                .icmpv6_echo_request(77, 1)
                .write(&mut out, b"ping")
                .unwrap(),
        }
        out
    }

    #[test]
    fn parses_tcp_udp_and_icmpv6() {
        let view = parse6_bytes(&build(6)).unwrap();
        assert_eq!(
            (view.ip_offset, view.l4_offset, view.payload_len),
            (14, 54, 20)
        );
        assert_eq!(
            (view.src, view.dst),
            (Ipv6Addr::from(CLIENT), Ipv6Addr::from(VIP))
        );
        assert_eq!(
            (view.hop_limit, view.traffic_class, view.flow_label),
            (64, 0, 0)
        );
        assert_eq!(view.ports(), Some((40000, 80)));
        assert_eq!(view.protocol(), 6);
        assert!(view.tcp_flags().unwrap().contains(TcpFlags::SYN));
        let view = parse6_bytes(&build(17)).unwrap();
        assert_eq!((view.protocol(), view.ports()), (17, Some((40001, 53))));
        let view = parse6_bytes(&build(58)).unwrap();
        assert_eq!(
            view.l4,
            L4::Icmp {
                kind: 128,
                code: 0,
                echo_id: 77
            }
        );
        assert!(!view.is_icmp_error());
        assert_eq!(view.ip_end(), build(58).len());
    }

    #[test]
    fn walks_extension_headers_to_the_transport() {
        let mut frame = build(6);
        // Insert a destination options header (8 bytes) before TCP.
        let ext = [6u8, 0, 1, 4, 0, 0, 0, 0];
        frame.splice(54..54, ext);
        frame[20] = 60;
        frame[18..20].copy_from_slice(&28u16.to_be_bytes());
        let view = parse6_bytes(&frame).unwrap();
        assert_eq!((view.l4_offset, view.ports()), (62, Some((40000, 80))));
        // As a first fragment instead: refused by the IPv4 policy.
        frame[20] = 44;
        frame[54..62].copy_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9]);
        assert_eq!(parse6_bytes(&frame), Err(Reason::FirstFragment));
        frame[54..62].copy_from_slice(&[6, 0, 0, 8, 0, 0, 0, 9]);
        assert_eq!(parse6_bytes(&frame), Err(Reason::LaterFragment));
        // Atomic fragment: whole.
        frame[54..62].copy_from_slice(&[6, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(parse6_bytes(&frame).unwrap().l4_offset, 62);
    }

    #[test]
    fn refuses_each_malformation_with_its_reason() {
        let good = build(17);
        type Corrupt = fn(&mut Vec<u8>);
        let cases: [(&str, Corrupt, Reason); 10] = [
            ("empty", |f| f.clear(), Reason::Truncated),
            (
                "ipv4",
                |f| f[12..14].copy_from_slice(&[8, 0]),
                Reason::NotIpv6,
            ),
            ("short ip", |f| f.truncate(50), Reason::Truncated),
            ("version 4", |f| f[14] = 0x40, Reason::BadIpVersion),
            ("payload long", |f| f[19] += 1, Reason::BadIpTotalLength),
            (
                "udp short",
                |f| {
                    f[19] = 7;
                    f.truncate(61)
                },
                Reason::Truncated,
            ),
            ("udp length", |f| f[59] = 7, Reason::BadUdpLength),
            (
                "udp zero checksum",
                |f| f[60..62].copy_from_slice(&[0, 0]),
                Reason::UdpZeroChecksum,
            ),
            (
                "no next header",
                |f| f[20] = 59,
                Reason::UnsupportedProtocol,
            ),
            (
                "bad routing",
                |f| {
                    f[20] = 43;
                    f[54..58].copy_from_slice(&[17, 0, 4, 1])
                },
                Reason::BadExtensionHeader,
            ),
        ];
        for (name, corrupt, reason) in cases {
            let mut frame = good.clone();
            corrupt(&mut frame);
            assert_eq!(parse6_bytes(&frame), Err(reason), "{name}");
        }
    }

    proptest! {
        /// Whatever the bytes near a common frame, `parse_common6` gives `parse6`'s view or
        /// nothing, and it takes the plain TCP and UDP frames.
        #[test]
        fn parse_common6_agrees_with_parse6(kind in prop_oneof![Just(6u8), Just(17u8), Just(58u8)], tail in proptest::collection::vec(any::<u8>(), 0..24), edits in proptest::collection::vec((0usize..70, any::<u8>()), 0..3)) {
            let mut frame = build(kind);
            if kind != 58 {
                prop_assert_eq!(parse_common6(&frame), Some(parse6_bytes(&frame).unwrap()));
            }
            frame.extend_from_slice(&tail);
            for (at, byte) in edits {
                if at < frame.len() { frame[at] = byte; }
            }
            if let Some(view) = parse_common6(&frame) {
                prop_assert_eq!(Ok(view), parse6_bytes(&frame));
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_views_fit(bytes in proptest::collection::vec(any::<u8>(), 0..140), edits in proptest::collection::vec((0usize..90, any::<u8>()), 0..4)) {
            let _ = parse6_bytes(&bytes);
            let mut frame = build(6);
            frame.extend_from_slice(&bytes);
            for (at, byte) in edits {
                if at < frame.len() { frame[at] = byte; }
            }
            let mut copy = frame.clone();
            if let Ok(view) = parse6_bytes(&frame) {
                let f = Frame::whole(&mut copy);
                prop_assert!(view.check_fits(&f).is_ok());
            }
        }
    }
}
