//! ICMP errors about tracked connections (IPVS `ip_vs_in_icmp`, `ip_vs_out_icmp`,
//! `ip_vs_nat_icmp`).
//!
//! A router or host that cannot deliver one of a connection's packets answers with an ICMP
//! error quoting that packet's IP header and first 8 transport bytes. The director must relay
//! the error to the endpoint that sent the quoted packet, and in NAT mode make the quote match
//! what that endpoint sent. The dataplane:
//!
//! 1. `parse` the frame (the view says ICMP, `is_icmp_error()`),
//! 2. `parse_error` to read the quoted flow, and look the connection up with it. The quoted
//!    packet travelled the opposite way from the ICMP error: an error arriving from the client
//!    side quotes a reply `VIP:vport -> client` (NAT) or `VIP -> client` (DR/TUN, sent by the
//!    real server); one arriving from a real server quotes `client -> RIP:rport`.
//! 3. rewrite: NAT uses `rewrite_toward_real_server` / `rewrite_toward_client`; DR and TUN
//!    forward the error unchanged with `dr::forward` / `tun::encapsulate`, as IPVS does.
//!
//! TUN has one more case: a router between the director and a real server reports a problem
//! with one of our IPIP packets, quoting our outer header (director -> real server, protocol
//! 4) and, behind it, the client's datagram. `parse_error` then reports the client's flow plus
//! the quoted tunnel ends (`IcmpErrorView::tunnel`), and `answer_tunnel_error` turns the error
//! into the same error from the VIP to the client, with the MTU lowered by the 20 bytes of
//! encapsulation for "fragmentation needed" (IPVS `ip_vs_in_icmp`, its tunnel branch).
//!
//! Only destination unreachable (fragmentation needed included) and time exceeded are relayed.
//! Source quench, which IPVS still relays, is refused: RFC 6633 deprecates it.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::edit::{self, L4Checksum};
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, at, icmp, ipv4, tcp};
use crate::fragments::Fragmentation;
use crate::reply::{self, ErrorMessage};
use crate::{Frame, L4, PacketView, Reason, checksum};

/// The flow of the packet an ICMP error quotes, as that packet was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedFlow {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// Source address and port of the quoted packet.
    pub src: SocketAddrV4,
    /// Destination address and port of the quoted packet.
    pub dst: SocketAddrV4,
}

/// The outer header of a quoted IPIP packet: the tunnel it travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedTunnel {
    /// Outer source: must be this director's tunnel address for the error to be ours.
    pub source: Ipv4Addr,
    /// Outer destination: the real server.
    pub real_server: Ipv4Addr,
    /// DF of the outer header, copied from the client's packet: the client does PMTU discovery.
    pub dont_fragment: bool,
}

/// A validated ICMP error and the offsets of its quote. `Copy`, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorView {
    /// ICMP type: 3 (destination unreachable) or 11 (time exceeded).
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU of a "fragmentation needed" (type 3 code 4), 0 otherwise.
    pub next_hop_mtu: u16,
    /// Offset of the quoted IPv4 header in the frame (for a tunnel error, of the client's
    /// datagram inside the quoted IPIP packet).
    pub quote_ip_offset: u16,
    /// Offset of the quoted TCP/UDP header in the frame.
    pub quote_l4_offset: u16,
    /// The quoted packet's flow, for the connection lookup.
    pub flow: QuotedFlow,
    /// Set when the quote is one of our IPIP packets (TUN): `flow` is then the client's
    /// inner flow.
    pub tunnel: Option<QuotedTunnel>,
}

impl IcmpErrorView {
    /// True for "fragmentation needed".
    #[inline]
    pub fn is_fragmentation_needed(&self) -> bool {
        self.kind == icmp::DEST_UNREACHABLE && self.code == icmp::CODE_FRAG_NEEDED
    }
}

/// Reads the quoted header of the ICMP error in `frame` (described by `view`).
///
/// Refuses: not an ICMP error IPVS relays (`NotIcmpError`); a bad ICMP checksum, checked over
/// the whole message before the quote is trusted, as `ip_vs_in_icmp` does (`BadIcmpChecksum`);
/// a quote shorter than an IPv4 header plus 8 bytes, or not IPv4 (`IcmpQuoteTruncated`);
/// a quoted non-first fragment (`IcmpQuotesFragment`); a quoted protocol other than TCP/UDP
/// (`IcmpQuotedProtocol`).
pub fn parse_error(frame: &Frame<'_>, view: &PacketView) -> Result<IcmpErrorView, Reason> {
    view.check_fits(frame)?;
    let L4::Icmp { kind, code, .. } = view.l4 else {
        return Err(Reason::NotIcmpError);
    };
    if !view.is_icmp_error() {
        return Err(Reason::NotIcmpError);
    }
    let icmp_start = usize::from(view.l4_offset);
    let message = frame
        .data()
        .get(icmp_start..view.ip_end())
        .ok_or(Reason::ViewMismatch)?;
    if !checksum::verifies(message) {
        return Err(Reason::BadIcmpChecksum);
    }
    let quote = message
        .get(icmp::HEADER_LEN..)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    let quoted = read_quoted_header(quote)?;
    let (inner_at, inner, tunnel) = if quoted.protocol == ipv4::PROTO_IPIP {
        let inner_bytes = quote
            .get(quoted.header_len..)
            .ok_or(Reason::IcmpQuoteTruncated)?;
        let inner = read_quoted_header(inner_bytes)?;
        let tunnel = QuotedTunnel {
            source: quoted.src,
            real_server: quoted.dst,
            dont_fragment: quoted.dont_fragment,
        };
        (quoted.header_len, inner, Some(tunnel))
    } else {
        (0, quoted, None)
    };
    if inner.protocol != ipv4::PROTO_TCP && inner.protocol != ipv4::PROTO_UDP {
        return Err(Reason::IcmpQuotedProtocol);
    }
    let next_hop_mtu = if kind == icmp::DEST_UNREACHABLE && code == icmp::CODE_FRAG_NEEDED {
        field::read_u16(message, icmp::NEXT_HOP_MTU).unwrap_or(0)
    } else {
        0
    };
    let quote_ip_offset = icmp_start + icmp::HEADER_LEN + inner_at;
    Ok(IcmpErrorView {
        kind,
        code,
        next_hop_mtu,
        quote_ip_offset: quote_ip_offset as u16,
        quote_l4_offset: (quote_ip_offset + inner.header_len) as u16,
        flow: QuotedFlow {
            protocol: inner.protocol,
            src: SocketAddrV4::new(inner.src, inner.src_port),
            dst: SocketAddrV4::new(inner.dst, inner.dst_port),
        },
        tunnel,
    })
}

/// The fields of a quoted IPv4 header, and the first 4 bytes after it read as two ports.
struct QuotedHeader {
    header_len: usize,
    protocol: u8,
    dont_fragment: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

/// Reads a quoted IPv4 header followed by at least 8 bytes; refuses non-first fragments.
fn read_quoted_header(quote: &[u8]) -> Result<QuotedHeader, Reason> {
    let version_ihl = *quote
        .get(ipv4::VERSION_IHL)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < ipv4::MIN_HEADER_LEN || quote.len() < header_len + 8 {
        return Err(Reason::IcmpQuoteTruncated);
    }
    let flags_word =
        field::read_u16(quote, ipv4::FLAGS_FRAGMENT).ok_or(Reason::IcmpQuoteTruncated)?;
    if let Fragmentation::Later { .. } = Fragmentation::from_flags_word(flags_word) {
        return Err(Reason::IcmpQuotesFragment);
    }
    let read_addr = |place| field::read_u32(quote, place).map(Ipv4Addr::from_bits);
    let read_port = |place| field::read_u16(quote, at(header_len, place));
    let (Some(protocol), Some(src), Some(dst), Some(src_port), Some(dst_port)) = (
        quote.get(ipv4::PROTOCOL).copied(),
        read_addr(ipv4::SOURCE),
        read_addr(ipv4::DESTINATION),
        read_port(tcp::SRC_PORT),
        read_port(tcp::DST_PORT),
    ) else {
        return Err(Reason::IcmpQuoteTruncated);
    };
    Ok(QuotedHeader {
        header_len,
        protocol,
        dont_fragment: flags_word & ipv4::FLAG_DF != 0,
        src,
        dst,
        src_port,
        dst_port,
    })
}

/// NAT, error from the client side about a reply `VIP:vport -> client`
/// (IPVS `ip_vs_in_icmp` -> `ip_vs_nat_icmp(.., inout = 0)`): the outer destination becomes the
/// real server, the quoted source becomes `real_server` (address and port), so the real server
/// recognises its own packet.
pub fn rewrite_toward_real_server(
    frame: &mut Frame<'_>,
    view: &PacketView,
    error: &IcmpErrorView,
    real_server: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    relay(frame, view, error, Side::RealServer, real_server, egress)
}

/// NAT, error from the real-server side about `client -> RIP:rport`
/// (IPVS `ip_vs_out_icmp` -> `ip_vs_nat_icmp(.., inout = 1)`): the outer source becomes the
/// VIP, the quoted destination becomes `virtual_service`, so the client recognises the packet
/// it sent to VIP:vport.
pub fn rewrite_toward_client(
    frame: &mut Frame<'_>,
    view: &PacketView,
    error: &IcmpErrorView,
    virtual_service: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    relay(frame, view, error, Side::Client, virtual_service, egress)
}

#[derive(Clone, Copy)]
enum Side {
    RealServer,
    Client,
}

fn relay(
    frame: &mut Frame<'_>,
    view: &PacketView,
    error: &IcmpErrorView,
    toward: Side,
    endpoint: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let ip = usize::from(view.ip_offset);
    let icmp_start = usize::from(view.l4_offset);
    let quote_ip = usize::from(error.quote_ip_offset);
    let quote_l4 = usize::from(error.quote_l4_offset);
    let end = view.ip_end();
    let quote_fits = quote_ip >= icmp_start + icmp::HEADER_LEN
        && quote_ip + ipv4::MIN_HEADER_LEN <= quote_l4
        && quote_l4 + 8 <= end;
    if !view.is_icmp_error() || !quote_fits {
        return Err(Reason::ViewMismatch);
    }
    if error.tunnel.is_some() {
        return Err(Reason::IcmpQuotedProtocol);
    }
    // An ICMP error is never answered with another: both gates drop instead of replying.
    egress::ttl_gate(frame, view, view.dst)?;
    egress::mtu_gate(frame, view, egress.mtu, view.dst)?;

    let new_address = endpoint.ip().to_bits();
    let (outer_field, quote_field, port_field) = match toward {
        Side::RealServer => (ipv4::DESTINATION, ipv4::SOURCE, tcp::SRC_PORT),
        Side::Client => (ipv4::SOURCE, ipv4::DESTINATION, tcp::DST_PORT),
    };
    // The quoted TCP checksum is patched only if the quote holds both of its bytes (a quote
    // may stop after 8 bytes, or anywhere up to 576). One byte alone cannot be patched: the
    // carry between the two is unknown. (IPVS patches no quoted transport checksum at all.)
    let quote_checksum = L4Checksum::locate(error.flow.protocol, quote_l4, end);
    let packet = frame.data_mut();
    edit::decrement_ttl(packet, ip)?;
    edit::set_address(packet, ip, outer_field, new_address, L4Checksum::None)?;
    edit::set_address(packet, quote_ip, quote_field, new_address, quote_checksum)?;
    edit::set_port(
        packet,
        quote_l4,
        port_field,
        endpoint.port(),
        quote_checksum,
    )?;
    // The ICMP checksum covers the whole quote: recompute it, as ip_vs_nat_icmp does
    // (errors are rare and at most a few hundred bytes).
    let icmp_checksum = at(icmp_start, icmp::CHECKSUM);
    field::write_u16(packet, icmp_checksum.clone(), 0).ok_or(Reason::ViewMismatch)?;
    let message = packet.get(icmp_start..end).ok_or(Reason::ViewMismatch)?;
    let sum = checksum::checksum(message);
    field::write_u16(packet, icmp_checksum, sum).ok_or(Reason::ViewMismatch)?;
    egress::write_macs(packet, egress)?;
    egress::trim_after_datagram(frame, view);
    Ok(Transmit::Forward)
}

/// IPVS lowers a reported MTU by the IPIP header only when it stays above 68.
const MIN_TUNNEL_PMTU: u16 = 68 + ipv4::MIN_HEADER_LEN as u16;

/// TUN, an ICMP error about one of our IPIP packets (IPVS `ip_vs_in_icmp`, tunnel branch):
/// the frame becomes the same error sent from the VIP to the client, quoting the client's
/// datagram from inside the quoted tunnel packet, leaving by `egress` (toward the client).
///
/// For "fragmentation needed" the next-hop MTU is lowered by the 20-byte outer header (when
/// above 88, as IPVS does), and the error is passed on only if the client set DF; other
/// errors keep their type, code and bytes 4..8. The caller has checked `error.tunnel.source`
/// is its tunnel address and found the connection by `error.flow`. The reply is built in place
/// (the quoted datagram already sits 62 bytes into the frame), so no headroom is needed; the
/// quote is cut so the error fits `egress.mtu` (at most 576 bytes), and an MTU below IPv4's
/// 68 refuses it (`TooBig`).
pub fn answer_tunnel_error(
    frame: &mut Frame<'_>,
    view: &PacketView,
    error: &IcmpErrorView,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let tunnel = error.tunnel.ok_or(Reason::ViewMismatch)?;
    let client = *error.flow.src.ip();
    if !reply::answerable(client) {
        return Err(Reason::TunnelErrorIgnored);
    }
    let icmp_start = usize::from(view.l4_offset);
    let quote = usize::from(error.quote_ip_offset)..view.ip_end();
    let rest = if error.is_fragmentation_needed() {
        // "Client uses PMTUD?": without DF it would not act on the error.
        if !tunnel.dont_fragment {
            return Err(Reason::TunnelErrorIgnored);
        }
        let mtu = error.next_hop_mtu;
        let mtu = if mtu > MIN_TUNNEL_PMTU {
            mtu - ipv4::MIN_HEADER_LEN as u16
        } else {
            mtu
        };
        u32::from(mtu)
    } else {
        field::read_u32(frame.data(), at(icmp_start, icmp::REST_OF_HEADER))
            .ok_or(Reason::ViewMismatch)?
    };
    let quoted_tos = frame
        .data()
        .get(quote.start + ipv4::TOS)
        .copied()
        .ok_or(Reason::ViewMismatch)?;
    let message = ErrorMessage {
        kind: error.kind,
        code: error.code,
        rest,
        source: *error.flow.dst.ip(),
        destination: client,
        quoted_tos,
        src_mac: egress.src_mac,
        dst_mac: egress.dst_mac,
        mtu: egress.mtu,
    };
    reply::write_around_quote(frame, quote, &message)?;
    Ok(Transmit::Forward)
}
