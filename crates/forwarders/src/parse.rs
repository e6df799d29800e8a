//! Parsing a received frame into the compact header view the pipeline works with.
//!
//! Validation happens once, here, at the edge: the header structure (lengths, version, IHL,
//! TCP data offset, UDP length) and the rules a forwarder needs (IPv4 header checksum,
//! fragments), read straight from the bytes at the offsets `field` names. Everything
//! downstream (classification, conntrack, the rewrites) reads the `PacketView` and never
//! re-parses.

use core::net::Ipv4Addr;

use crate::field::{eth, icmp, ipv4, tcp, udp};
use crate::fragments::Fragmentation;
use crate::{Frame, Reason, checksum};

/// TCP header flags (byte 13 of the header), kept as the header has them: the model's type,
/// which conntrack reads too.
pub use xvs_model::TcpFlags;

/// The transport header fields the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with its ports and flags.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Header flags, for the connection state machine.
        flags: TcpFlags,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP: echo (with its identifier) or an error (see `icmp`).
    Icmp {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
        /// Echo identifier for echo request/reply, 0 for every other type.
        echo_id: u16,
    },
}

/// A validated Ethernet/IPv4 frame, described by value: offsets into the frame plus the fields
/// classification and conntrack use. `Copy`, at most 32 bytes, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketView {
    /// Offset of the IPv4 header in the frame (14: untagged Ethernet).
    pub ip_offset: u16,
    /// Offset of the TCP/UDP/ICMP header in the frame.
    pub l4_offset: u16,
    /// IPv4 total length; bytes past `ip_offset + ip_total_len` are Ethernet padding.
    pub ip_total_len: u16,
    /// IPv4 source address.
    pub src: Ipv4Addr,
    /// IPv4 destination address.
    pub dst: Ipv4Addr,
    /// Time to live as received.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    /// IPv4 identification.
    pub ident: u16,
    /// DF flag: the sender does path MTU discovery and wants "fragmentation needed" back.
    pub dont_fragment: bool,
    /// Transport header fields.
    pub l4: L4,
}

impl PacketView {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    #[inline]
    pub fn protocol(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => ipv4::PROTO_TCP,
            L4::Udp { .. } => ipv4::PROTO_UDP,
            L4::Icmp { .. } => ipv4::PROTO_ICMP,
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

    /// True for the ICMP errors IPVS relays for its connections (destination unreachable,
    /// including fragmentation needed, and time exceeded). RFC 1122 forbids answering these
    /// with another ICMP error, so the rewrites drop rather than reply when they are too big.
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        matches!(
            self.l4,
            L4::Icmp {
                kind: icmp::DEST_UNREACHABLE | icmp::TIME_EXCEEDED,
                ..
            }
        )
    }

    /// End of the IP datagram in the frame (start of any Ethernet padding).
    #[inline]
    pub fn ip_end(&self) -> usize {
        usize::from(self.ip_offset) + usize::from(self.ip_total_len)
    }

    /// Refuses a view that does not fit `frame` (a view from another frame).
    #[inline]
    pub(crate) fn check_fits(&self, frame: &Frame<'_>) -> Result<(), Reason> {
        let header_end = usize::from(self.ip_offset) + ipv4::MIN_HEADER_LEN;
        let l4_offset = usize::from(self.l4_offset);
        if self.ip_end() <= frame.len() && header_end <= l4_offset && l4_offset <= self.ip_end() {
            Ok(())
        } else {
            Err(Reason::ViewMismatch)
        }
    }
}

/// Parses an Ethernet II / IPv4 / {TCP, UDP, ICMP} frame.
///
/// Refuses, with the reason to count: truncated headers, other EtherTypes (VLAN-tagged frames
/// included), a bad version, IHL or total length, a bad IPv4 header checksum, fragments (see
/// `fragments` for why), other protocols, a TCP data offset or UDP length that does not fit.
/// Never panics, whatever the bytes.
#[inline]
pub fn parse(frame: &Frame<'_>) -> Result<PacketView, Reason> {
    parse_bytes(frame.data())
}

/// [`parse`] on a plain byte slice holding the frame.
///
/// Inlined so that the view is built in the caller's registers rather than written to memory
/// and read back (a store-forwarding stall measured at several ns per packet).
#[inline(always)]
pub fn parse_bytes(data: &[u8]) -> Result<PacketView, Reason> {
    if data.len() < eth::HEADER_LEN {
        return Err(Reason::Truncated);
    }
    if be16(data, eth::ETHERTYPE.start) != eth::ETHERTYPE_IPV4 {
        return Err(Reason::NotIpv4);
    }
    let ip_bytes = &data[eth::HEADER_LEN..];
    // The checks and their order are the IPv4 header's own: length, version, IHL.
    if ip_bytes.len() < ipv4::MIN_HEADER_LEN {
        return Err(Reason::Truncated);
    }
    let version_ihl = ip_bytes[ipv4::VERSION_IHL];
    if version_ihl >> 4 != 4 {
        return Err(Reason::BadIpVersion);
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if header_len < ipv4::MIN_HEADER_LEN {
        return Err(Reason::BadIpHeaderLength);
    }
    if ip_bytes.len() < header_len {
        return Err(Reason::Truncated);
    }
    let total_len = usize::from(be16(ip_bytes, ipv4::TOTAL_LEN.start));
    if total_len < header_len || total_len > ip_bytes.len() {
        return Err(Reason::BadIpTotalLength);
    }
    let header = &ip_bytes[..header_len];
    if !checksum::verifies(header) {
        return Err(Reason::BadIpChecksum);
    }
    let flags_word = be16(header, ipv4::FLAGS_FRAGMENT.start);
    Fragmentation::from_flags_word(flags_word).admit()?;

    let l4 = parse_l4(header[ipv4::PROTOCOL], &ip_bytes[header_len..total_len])?;
    Ok(PacketView {
        ip_offset: eth::HEADER_LEN as u16,
        l4_offset: (eth::HEADER_LEN + header_len) as u16,
        ip_total_len: total_len as u16,
        src: Ipv4Addr::from(be32(header, ipv4::SOURCE.start)),
        dst: Ipv4Addr::from(be32(header, ipv4::DESTINATION.start)),
        ttl: header[ipv4::TTL],
        tos: header[ipv4::TOS],
        ident: be16(header, ipv4::IDENTIFICATION.start),
        dont_fragment: flags_word & ipv4::FLAG_DF != 0,
        l4,
    })
}

/// The frame nearly every packet is, checked in one pass with fixed offsets: Ethernet II,
/// IPv4 without options, not a fragment, a correct header checksum, and a TCP or UDP header
/// that fits. `None` for anything else, which [`parse`] then decides about (and refuses, with
/// its reason, if it must). Where this returns a view it is exactly the view [`parse_bytes`]
/// returns (a test holds the two to it).
#[inline(always)]
pub fn parse_common(data: &[u8]) -> Option<PacketView> {
    const IP: usize = eth::HEADER_LEN;
    const L4: usize = IP + ipv4::MIN_HEADER_LEN;
    let head = data.first_chunk::<{ L4 + udp::HEADER_LEN }>()?;
    let ip: &[u8; ipv4::MIN_HEADER_LEN] = head[IP..L4].try_into().ok()?;
    let flags_word = u16::from_be_bytes([ip[6], ip[7]]);
    if u16::from_be_bytes([head[12], head[13]]) != eth::ETHERTYPE_IPV4
        || ip[ipv4::VERSION_IHL] != 0x45
        || flags_word & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0
    {
        return None;
    }
    let total_len = u16::from_be_bytes([ip[2], ip[3]]);
    let l4_len = usize::from(total_len).checked_sub(ipv4::MIN_HEADER_LEN)?;
    if IP + usize::from(total_len) > data.len() || !checksum::verifies_20(ip) {
        return None;
    }
    let ports = (
        u16::from_be_bytes([head[L4], head[L4 + 1]]),
        u16::from_be_bytes([head[L4 + 2], head[L4 + 3]]),
    );
    let l4 = match ip[ipv4::PROTOCOL] {
        ipv4::PROTO_TCP => {
            let tcp = data.get(L4..L4 + tcp::MIN_HEADER_LEN)?;
            let header_len = usize::from(tcp[tcp::DATA_OFFSET] >> 4) * 4;
            if l4_len < tcp::MIN_HEADER_LEN
                || header_len < tcp::MIN_HEADER_LEN
                || header_len > l4_len
            {
                return None;
            }
            L4::Tcp {
                src_port: ports.0,
                dst_port: ports.1,
                flags: TcpFlags(tcp[tcp::FLAGS]),
            }
        }
        ipv4::PROTO_UDP => {
            let length = usize::from(u16::from_be_bytes([head[L4 + 4], head[L4 + 5]]));
            if length < udp::HEADER_LEN || length > l4_len {
                return None;
            }
            L4::Udp {
                src_port: ports.0,
                dst_port: ports.1,
            }
        }
        _ => return None,
    };
    Some(PacketView {
        ip_offset: IP as u16,
        l4_offset: L4 as u16,
        ip_total_len: total_len,
        src: Ipv4Addr::from(be32(ip, ipv4::SOURCE.start)),
        dst: Ipv4Addr::from(be32(ip, ipv4::DESTINATION.start)),
        ttl: ip[ipv4::TTL],
        tos: ip[ipv4::TOS],
        ident: be16(ip, ipv4::IDENTIFICATION.start),
        dont_fragment: flags_word & ipv4::FLAG_DF != 0,
        l4,
    })
}

/// The big-endian 16-bit word at `at` (the caller checked the length).
#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The big-endian 32-bit word at `at` (the caller checked the length).
#[inline(always)]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads the transport fields from `l4_bytes`, the IP payload (padding excluded).
#[inline(always)]
fn parse_l4(protocol: u8, l4_bytes: &[u8]) -> Result<L4, Reason> {
    match protocol {
        ipv4::PROTO_TCP => {
            if l4_bytes.len() < tcp::MIN_HEADER_LEN {
                return Err(Reason::Truncated);
            }
            // Data offset: at least the fixed header, and all of it present.
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
        ipv4::PROTO_UDP => {
            if l4_bytes.len() < udp::HEADER_LEN {
                return Err(Reason::Truncated);
            }
            let length = usize::from(be16(l4_bytes, udp::LENGTH.start));
            if length < udp::HEADER_LEN || length > l4_bytes.len() {
                return Err(Reason::BadUdpLength);
            }
            Ok(L4::Udp {
                src_port: be16(l4_bytes, udp::SRC_PORT.start),
                dst_port: be16(l4_bytes, udp::DST_PORT.start),
            })
        }
        ipv4::PROTO_ICMP => {
            if l4_bytes.len() < icmp::HEADER_LEN {
                return Err(Reason::Truncated);
            }
            let kind = l4_bytes[icmp::TYPE];
            let echo_id = match kind {
                icmp::ECHO_REQUEST | icmp::ECHO_REPLY => be16(l4_bytes, icmp::ECHO_ID.start),
                _ => 0,
            };
            Ok(L4::Icmp {
                kind,
                code: l4_bytes[icmp::CODE],
                echo_id,
            })
        }
        _ => Err(Reason::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured-style TCP SYN: 02:00:00:00:00:01 -> 02:00:00:00:00:02,
    /// 192.168.1.10:40000 -> 10.0.0.100:80, TTL 64, DF, ID 0x1c46.
    const TCP_SYN: [u8; 54] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // ip (csum 0)
        0xc0, 0xa8, 0x01, 0x0a, 0x0a, 0x00, 0x00, 0x64, // addrs
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // tcp
        0x50, 0x02, 0xfa, 0xf0, 0x00, 0x00, 0x00, 0x00,
    ];

    fn with_ip_checksum(mut frame: Vec<u8>) -> Vec<u8> {
        frame[24] = 0;
        frame[25] = 0;
        let csum = checksum::ipv4_header(&frame[14..34]);
        frame[24..26].copy_from_slice(&csum.to_be_bytes());
        frame
    }

    #[test]
    fn parses_literal_tcp_syn() {
        let frame = with_ip_checksum(TCP_SYN.to_vec());
        let view = parse_bytes(&frame).unwrap();
        assert_eq!(view.ip_offset, 14);
        assert_eq!(view.l4_offset, 34);
        assert_eq!(view.ip_total_len, 40);
        assert_eq!(view.src, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(view.dst, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(view.ttl, 64);
        assert_eq!(view.tos, 0);
        assert_eq!(view.ident, 0x1c46);
        assert!(view.dont_fragment);
        assert_eq!(
            view.l4,
            L4::Tcp {
                src_port: 40000,
                dst_port: 80,
                flags: TcpFlags::SYN
            }
        );
        assert_eq!(view.protocol(), 6);
        assert_eq!(view.ports(), Some((40000, 80)));
        assert!(view.tcp_flags().unwrap().contains(TcpFlags::SYN));
        assert!(!view.is_icmp_error());
    }

    #[test]
    fn refuses_each_malformation_with_its_reason() {
        let good = with_ip_checksum(TCP_SYN.to_vec());
        type Corrupt = fn(&mut Vec<u8>);
        let cases: [(&str, Corrupt, Reason); 11] = [
            ("empty", |f| f.clear(), Reason::Truncated),
            ("eth only", |f| f.truncate(14), Reason::Truncated),
            (
                "arp",
                |f| f[12..14].copy_from_slice(&[0x08, 0x06]),
                Reason::NotIpv4,
            ),
            (
                "vlan",
                |f| f[12..14].copy_from_slice(&[0x81, 0x00]),
                Reason::NotIpv4,
            ),
            ("version 6", |f| f[14] = 0x65, Reason::BadIpVersion),
            ("ihl 4", |f| f[14] = 0x44, Reason::BadIpHeaderLength),
            ("ihl beyond frame", |f| f[14] = 0x4f, Reason::Truncated),
            ("total too long", |f| f[17] = 41, Reason::BadIpTotalLength),
            ("total < ihl", |f| f[17] = 19, Reason::BadIpTotalLength),
            ("ip checksum", |f| f[24] ^= 1, Reason::BadIpChecksum),
            ("tcp cut", |f| f.truncate(50), Reason::BadIpTotalLength),
        ];
        for (name, corrupt, reason) in cases {
            let mut frame = good.clone();
            corrupt(&mut frame);
            let fix_checksum = !matches!(reason, Reason::BadIpChecksum) && frame.len() >= 34;
            if fix_checksum && frame[14] == 0x45 {
                frame = with_ip_checksum(frame);
            }
            assert_eq!(parse_bytes(&frame), Err(reason), "{name}");
        }
    }

    #[test]
    fn refuses_bad_tcp_data_offset_and_unknown_protocols() {
        let mut frame = TCP_SYN.to_vec();
        frame[46] = 0x40; // data offset 4
        assert_eq!(
            parse_bytes(&with_ip_checksum(frame)),
            Err(Reason::BadTcpHeader)
        );
        let mut frame = TCP_SYN.to_vec();
        frame[46] = 0x60; // data offset 6: 24 bytes, only 20 present
        assert_eq!(
            parse_bytes(&with_ip_checksum(frame)),
            Err(Reason::BadTcpHeader)
        );
        let mut frame = TCP_SYN.to_vec();
        frame[23] = 47; // GRE
        assert_eq!(
            parse_bytes(&with_ip_checksum(frame)),
            Err(Reason::UnsupportedProtocol)
        );
    }

    #[test]
    fn refuses_fragments() {
        let mut frame = TCP_SYN.to_vec();
        frame[20] = 0x20; // MF, offset 0
        assert_eq!(
            parse_bytes(&with_ip_checksum(frame)),
            Err(Reason::FirstFragment)
        );
        let mut frame = TCP_SYN.to_vec();
        frame[20] = 0x00;
        frame[21] = 0x10; // offset 16 * 8
        assert_eq!(
            parse_bytes(&with_ip_checksum(frame)),
            Err(Reason::LaterFragment)
        );
    }

    #[test]
    fn the_view_stays_compact() {
        assert!(core::mem::size_of::<PacketView>() <= 32);
    }

    #[test]
    fn parses_udp_and_icmp_echo() {
        let mut frame = TCP_SYN.to_vec();
        frame[23] = 17; // UDP: ports 40000 -> 80, length 20 (bytes 38..40 = 0x0000 0x0001)
        frame[38] = 0x00;
        frame[39] = 0x14;
        let view = parse_bytes(&with_ip_checksum(frame)).unwrap();
        assert_eq!(
            view.l4,
            L4::Udp {
                src_port: 40000,
                dst_port: 80
            }
        );
        assert_eq!(view.protocol(), 17);
        assert_eq!(view.tcp_flags(), None);

        let mut frame = TCP_SYN.to_vec();
        frame[23] = 1; // ICMP echo request, id 0x0050
        frame[34] = 8;
        frame[35] = 0;
        frame[38] = 0x00;
        frame[39] = 0x50;
        let view = parse_bytes(&with_ip_checksum(frame)).unwrap();
        assert_eq!(
            view.l4,
            L4::Icmp {
                kind: 8,
                code: 0,
                echo_id: 0x50
            }
        );
        assert_eq!(view.ports(), None);
        assert!(!view.is_icmp_error());
    }

    #[test]
    fn refuses_bad_udp_lengths() {
        for length in [7u16, 21] {
            let mut frame = TCP_SYN.to_vec();
            frame[23] = 17;
            frame[38..40].copy_from_slice(&length.to_be_bytes());
            assert_eq!(
                parse_bytes(&with_ip_checksum(frame)),
                Err(Reason::BadUdpLength),
                "{length}"
            );
        }
    }

    #[test]
    fn ethernet_padding_is_not_part_of_the_datagram() {
        let mut frame = with_ip_checksum(TCP_SYN.to_vec());
        frame.extend_from_slice(&[0; 6]);
        let view = parse_bytes(&frame).unwrap();
        assert_eq!(view.ip_total_len, 40);
        assert_eq!(view.ip_end(), 54);
    }

    /// Frames near the common case: a valid TCP or UDP frame with a few bytes changed where
    /// the checks look (EtherType, version/IHL, lengths, fragment bits, protocol, data
    /// offset, UDP length), the checksum fixed up or not.
    fn near_common() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let offsets = prop::sample::select(vec![
            12usize, 13, 14, 16, 17, 20, 21, 23, 38, 39, 46, 47, 60,
        ]);
        (
            any::<bool>(),
            prop::collection::vec((offsets, any::<u8>()), 0..3),
            any::<bool>(),
            0usize..24,
            any::<bool>(),
        )
            .prop_map(|(udp, edits, fix_checksum, padding, truncate)| {
                let mut frame = TCP_SYN.to_vec();
                frame.extend_from_slice(&[0xaa; 12]);
                if udp {
                    frame[23] = 17;
                    frame[38..40].copy_from_slice(&8u16.to_be_bytes());
                }
                // Room for a 32-byte TCP header too.
                frame[16..18].copy_from_slice(&52u16.to_be_bytes());
                for (at, byte) in edits {
                    if at < frame.len() {
                        frame[at] = byte;
                    }
                }
                if fix_checksum {
                    frame = with_ip_checksum(frame);
                }
                frame.extend(std::iter::repeat_n(0, padding));
                if truncate {
                    frame.truncate(frame.len() / 2 + padding);
                }
                frame
            })
    }

    proptest::proptest! {
        /// The fast path's parser accepts a subset of what `parse_bytes` accepts, and where
        /// it accepts a frame it describes it exactly as `parse_bytes` does.
        #[test]
        fn parse_common_agrees_with_parse(frame in near_common()) {
            if let Some(view) = parse_common(&frame) {
                proptest::prop_assert_eq!(Ok(view), parse_bytes(&frame));
            }
        }

        #[test]
        fn parse_common_takes_the_common_frames(udp: bool, tail in 0usize..16) {
            let mut frame = TCP_SYN.to_vec();
            if udp {
                frame[23] = 17;
                frame[16..18].copy_from_slice(&28u16.to_be_bytes());
                frame[38..40].copy_from_slice(&8u16.to_be_bytes());
                frame.truncate(42);
            }
            frame.extend(std::iter::repeat_n(0, tail));
            let frame = with_ip_checksum(frame);
            proptest::prop_assert_eq!(parse_common(&frame), parse_bytes(&frame).ok());
            proptest::prop_assert!(parse_common(&frame).is_some());
        }
    }
}
