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
//! Only destination unreachable (fragmentation needed included) and time exceeded are relayed.
//! Source quench, which IPVS still relays, is refused: RFC 6633 deprecates it.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::edit::{self, L4Checksum};
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, at, icmp, ipv4, tcp};
use crate::fragments::Fragmentation;
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

/// A validated ICMP error and the offsets of its quote. `Copy`, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorView {
    /// ICMP type: 3 (destination unreachable) or 11 (time exceeded).
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU of a "fragmentation needed" (type 3 code 4), 0 otherwise.
    pub next_hop_mtu: u16,
    /// Offset of the quoted IPv4 header in the frame.
    pub quote_ip_offset: u16,
    /// Offset of the quoted TCP/UDP header in the frame.
    pub quote_l4_offset: u16,
    /// The quoted packet's flow, for the connection lookup.
    pub flow: QuotedFlow,
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
    let version_ihl = *quote
        .get(ipv4::VERSION_IHL)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    let quote_header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4
        || quote_header_len < ipv4::MIN_HEADER_LEN
        || quote.len() < quote_header_len + 8
    {
        return Err(Reason::IcmpQuoteTruncated);
    }
    let flags_word =
        field::read_u16(quote, ipv4::FLAGS_FRAGMENT).ok_or(Reason::IcmpQuoteTruncated)?;
    if let Fragmentation::Later { .. } = Fragmentation::from_flags_word(flags_word) {
        return Err(Reason::IcmpQuotesFragment);
    }
    let protocol = *quote
        .get(ipv4::PROTOCOL)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    if protocol != ipv4::PROTO_TCP && protocol != ipv4::PROTO_UDP {
        return Err(Reason::IcmpQuotedProtocol);
    }
    let read_addr = |place| field::read_u32(quote, place).map(Ipv4Addr::from_bits);
    let read_port = |place| field::read_u16(quote, at(quote_header_len, place));
    let (Some(src), Some(dst), Some(src_port), Some(dst_port)) = (
        read_addr(ipv4::SOURCE),
        read_addr(ipv4::DESTINATION),
        read_port(tcp::SRC_PORT),
        read_port(tcp::DST_PORT),
    ) else {
        return Err(Reason::IcmpQuoteTruncated);
    };
    let next_hop_mtu = if kind == icmp::DEST_UNREACHABLE && code == icmp::CODE_FRAG_NEEDED {
        field::read_u16(message, icmp::NEXT_HOP_MTU).unwrap_or(0)
    } else {
        0
    };
    let quote_ip_offset = icmp_start + icmp::HEADER_LEN;
    Ok(IcmpErrorView {
        kind,
        code,
        next_hop_mtu,
        quote_ip_offset: quote_ip_offset as u16,
        quote_l4_offset: (quote_ip_offset + quote_header_len) as u16,
        flow: QuotedFlow {
            protocol,
            src: SocketAddrV4::new(src, src_port),
            dst: SocketAddrV4::new(dst, dst_port),
        },
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
    if !view.is_icmp_error() || quote_ip < icmp_start + icmp::HEADER_LEN || quote_l4 + 8 > end {
        return Err(Reason::ViewMismatch);
    }
    // An ICMP error is never answered with another: both gates drop instead of replying.
    egress::ttl_gate(frame, view, view.dst)?;
    egress::mtu_gate(frame, view, egress.mtu, view.dst)?;

    let new_address = endpoint.ip().to_bits();
    let (outer_field, quote_field, port_field) = match toward {
        Side::RealServer => (ipv4::DESTINATION, ipv4::SOURCE, tcp::SRC_PORT),
        Side::Client => (ipv4::SOURCE, ipv4::DESTINATION, tcp::DST_PORT),
    };
    // The quoted TCP checksum is present only if the quote reaches byte 18 of its header.
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
    Ok(Transmit::Forward)
}
