//! ICMPv6 errors about tracked connections (IPVS `ip_vs_in_icmp_v6`, `ip_vs_out_icmp_v6`,
//! `ip_vs_nat_icmp_v6`): the IPv6 counterpart of [`crate::icmp`].
//!
//! The dataplane `parse6`s the frame (`is_icmp_error()`: destination unreachable, packet too
//! big, time exceeded, parameter problem), calls [`parse_error_v6`] for the quoted flow and
//! looks the connection up with it (the quoted packet travelled the opposite way, as for
//! IPv4). NAT then rewrites with [`rewrite_toward_real_server_v6`] /
//! [`rewrite_toward_client_v6`]; DR and TUN forward the error with `dr::forward_v6` /
//! `tun::encapsulate_6in6`, as IPVS does.
//!
//! TUN has one more case, as for IPv4: a router between the director and a real server
//! reports a problem with one of our IPv6-in-IPv6 packets, quoting our outer header (director
//! -> real server, next header 41) and, behind it, the client's packet. [`parse_error_v6`]
//! then reports the client's flow and the quoted tunnel ends (`Icmpv6ErrorView::tunnel`), and
//! [`answer_tunnel_error_v6`] turns the error into one from the VIP to the client: Packet Too
//! Big with the MTU lowered by the 40-byte outer header, destination unreachable and time
//! exceeded as they came. IPVS's `ip_vs_in_icmp_v6` has no such branch (it drops them, and
//! the client's path MTU discovery black-holes behind a smaller tunnel link); xvs does for
//! IPv6 what IPVS does for IPIP.
//!
//! Not handled (refused `IcmpQuotedProtocol`): errors quoting one of our mixed-family tunnel
//! packets (IPv4-in-IPv6 here, IPv6-in-IPv4 in [`crate::icmp`]); IPVS does not translate
//! those either.

use core::net::{Ipv6Addr, SocketAddrV6};

use crate::checksum::Delta;
use crate::edit::L4Checksum;
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, at, icmpv6, ipv6, tcp};
use crate::fragments::Fragmentation;
use crate::wire::{Icmpv6Packet, Ipv6Packet, walk_extension_headers};
use crate::{Frame, L4, PacketView6, Reason, reply6};

/// The flow of the IPv6 packet an ICMPv6 error quotes, as that packet was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedFlow6 {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// Source address and port of the quoted packet.
    pub src: SocketAddrV6,
    /// Destination address and port of the quoted packet.
    pub dst: SocketAddrV6,
}

/// The outer header of a quoted IPv6-in-IPv6 packet: the tunnel it travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedTunnel6 {
    /// Outer source: must be this director's tunnel address for the error to be ours.
    pub source: Ipv6Addr,
    /// Outer destination: the real server.
    pub real_server: Ipv6Addr,
}

/// A validated ICMPv6 error and the offsets of its quote. `Copy`, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6ErrorView {
    /// ICMPv6 type (1 to 4).
    pub kind: u8,
    /// ICMPv6 code.
    pub code: u8,
    /// Bytes 4..8: the MTU of a Packet Too Big, the pointer of a Parameter Problem.
    pub rest: u32,
    /// Offset of the quoted IPv6 header in the frame (for a tunnel error, of the client's
    /// packet inside the quoted tunnel packet).
    pub quote_ip_offset: u16,
    /// Offset of the quoted TCP/UDP header in the frame (after quoted extension headers).
    pub quote_l4_offset: u16,
    /// The quoted packet's flow, for the connection lookup.
    pub flow: QuotedFlow6,
    /// Set when the quote is one of our IPv6-in-IPv6 packets (TUN): `flow` is then the
    /// client's inner flow.
    pub tunnel: Option<QuotedTunnel6>,
}

/// Reads the quoted header of the ICMPv6 error in `frame` (described by `view`).
///
/// Refuses: not an ICMPv6 error (`NotIcmpError`); a bad checksum over the pseudo-header and
/// message, checked before the quote is trusted (`BadIcmpChecksum`); a quote shorter than
/// an IPv6 header, its extension headers and 8 transport bytes, or not IPv6
/// (`IcmpQuoteTruncated`); quoted extension headers the walker refuses (its reason); a
/// quoted later fragment (`IcmpQuotesFragment`); a quoted protocol other than TCP/UDP
/// (`IcmpQuotedProtocol`).
pub fn parse_error_v6(frame: &Frame<'_>, view: &PacketView6) -> Result<Icmpv6ErrorView, Reason> {
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
    let message = Icmpv6Packet::new_checked(message).map_err(|_| Reason::ViewMismatch)?;
    if !message.verify_checksum(view.src, view.dst) {
        return Err(Reason::BadIcmpChecksum);
    }
    let quote = message.data();
    let quoted = read_quoted6(quote)?;
    let (inner_at, inner, tunnel) = if quoted.protocol == ipv6::NEXT_IPV6 {
        let inner = quote
            .get(quoted.upper_at..)
            .ok_or(Reason::IcmpQuoteTruncated)?;
        let tunnel = QuotedTunnel6 {
            source: quoted.src,
            real_server: quoted.dst,
        };
        (quoted.upper_at, read_quoted6(inner)?, Some(tunnel))
    } else {
        (0, quoted, None)
    };
    if inner.protocol != ipv6::NEXT_TCP && inner.protocol != ipv6::NEXT_UDP {
        return Err(Reason::IcmpQuotedProtocol);
    }
    let l4_at = inner_at + inner.upper_at;
    let l4 = quote
        .get(l4_at..l4_at + 8)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    let port = |place| field::read_u16(l4, place).ok_or(Reason::IcmpQuoteTruncated);
    let quote_ip_offset = icmp_start + icmpv6::HEADER_LEN + inner_at;
    Ok(Icmpv6ErrorView {
        kind,
        code,
        rest: message.rest_of_header(),
        quote_ip_offset: quote_ip_offset as u16,
        quote_l4_offset: (quote_ip_offset + inner.upper_at) as u16,
        flow: QuotedFlow6 {
            protocol: inner.protocol,
            src: SocketAddrV6::new(inner.src, port(tcp::SRC_PORT)?, 0, 0),
            dst: SocketAddrV6::new(inner.dst, port(tcp::DST_PORT)?, 0, 0),
        },
        tunnel,
    })
}

/// A quoted IPv6 header with its extension headers walked.
struct QuotedHeader6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    /// The upper-layer protocol after the extension headers.
    protocol: u8,
    /// Offset of the upper-layer header from the quoted IPv6 header.
    upper_at: usize,
}

/// Reads a quoted IPv6 header and walks its extension headers; refuses a quote too short for
/// them (`IcmpQuoteTruncated`) and a quoted later fragment (`IcmpQuotesFragment`). The quote
/// may be cut anywhere, so its payload length is not checked against it.
fn read_quoted6(quote: &[u8]) -> Result<QuotedHeader6, Reason> {
    if quote.len() < ipv6::HEADER_LEN {
        return Err(Reason::IcmpQuoteTruncated);
    }
    let quoted = Ipv6Packet::new_unchecked(quote);
    if quoted.version() != 6 {
        return Err(Reason::IcmpQuoteTruncated);
    }
    let after = &quote[ipv6::HEADER_LEN..];
    let upper = walk_extension_headers(quoted.next_header(), after).map_err(|reason| {
        if reason == Reason::Truncated {
            Reason::IcmpQuoteTruncated
        } else {
            reason
        }
    })?;
    if let Fragmentation::Later { .. } = upper.fragmentation {
        return Err(Reason::IcmpQuotesFragment);
    }
    Ok(QuotedHeader6 {
        src: quoted.src_addr(),
        dst: quoted.dst_addr(),
        protocol: upper.protocol,
        upper_at: ipv6::HEADER_LEN + upper.offset,
    })
}

/// TUN, an ICMPv6 error about one of our IPv6-in-IPv6 packets: the frame becomes the same
/// error sent from the VIP to the client, quoting the client's packet from inside the quoted
/// tunnel packet, leaving by `egress` (toward the client).
///
/// Packet Too Big: the MTU is lowered by the 40-byte outer header, to no less than IPv6's
/// 1280 (as Linux's `ip6_tnl_err` does), and passed on only if the client's packet is larger
/// than that. Destination unreachable and time exceeded keep their code and bytes 4..8.
/// Parameter problem is ignored (its pointer is into our outer packet, not the client's).
/// The caller has checked `error.tunnel.source` is its tunnel address and found the
/// connection by `error.flow`. Built in place around the quote, cut to fit 1280 bytes and
/// `egress.mtu`.
pub fn answer_tunnel_error_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    error: &Icmpv6ErrorView,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    if error.tunnel.is_none() || !view.is_icmp_error() {
        return Err(Reason::ViewMismatch);
    }
    let client = *error.flow.src.ip();
    if !reply6::answerable6(client) {
        return Err(Reason::TunnelErrorIgnored);
    }
    let quote = usize::from(error.quote_ip_offset)..view.ip_end();
    let rest = match error.kind {
        icmpv6::PACKET_TOO_BIG => {
            let mtu = error
                .rest
                .saturating_sub(ipv6::HEADER_LEN as u32)
                .max(u32::from(ipv6::MIN_MTU));
            let payload_len = frame
                .data()
                .get(quote.start..)
                .and_then(|q| field::read_u16(q, ipv6::PAYLOAD_LEN))
                .ok_or(Reason::ViewMismatch)?;
            // The client's packet already fits: telling it so would change nothing.
            if ipv6::HEADER_LEN as u32 + u32::from(payload_len) <= mtu {
                return Err(Reason::TunnelErrorIgnored);
            }
            mtu
        }
        icmpv6::DEST_UNREACHABLE | icmpv6::TIME_EXCEEDED => error.rest,
        _ => return Err(Reason::TunnelErrorIgnored),
    };
    let message = reply6::ErrorMessage6 {
        kind: error.kind,
        code: error.code,
        rest,
        source: *error.flow.dst.ip(),
        destination: client,
        src_mac: egress.src_mac,
        dst_mac: egress.dst_mac,
        mtu: egress.mtu,
    };
    reply6::write6_around_quote(frame, quote, &message)?;
    Ok(Transmit::Forward)
}

/// NAT, error from the client side about a reply `VIP:vport -> client`: the outer
/// destination becomes the real server, the quoted source becomes `real_server` (address
/// and port), so the real server recognises its own packet.
pub fn rewrite_toward_real_server_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    error: &Icmpv6ErrorView,
    real_server: SocketAddrV6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    relay6(frame, view, error, Side::RealServer, real_server, egress)
}

/// NAT, error from the real-server side about `client -> RIP:rport`: the outer source
/// becomes the VIP, the quoted destination becomes `virtual_service`, so the client
/// recognises the packet it sent to VIP:vport.
pub fn rewrite_toward_client_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    error: &Icmpv6ErrorView,
    virtual_service: SocketAddrV6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    relay6(frame, view, error, Side::Client, virtual_service, egress)
}

#[derive(Clone, Copy)]
enum Side {
    RealServer,
    Client,
}

fn relay6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    error: &Icmpv6ErrorView,
    toward: Side,
    endpoint: SocketAddrV6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let ip = usize::from(view.ip_offset);
    let icmp_start = usize::from(view.l4_offset);
    let quote_ip = usize::from(error.quote_ip_offset);
    let quote_l4 = usize::from(error.quote_l4_offset);
    let end = view.ip_end();
    let quote_fits = quote_ip == icmp_start + icmpv6::HEADER_LEN
        && quote_ip + ipv6::HEADER_LEN <= quote_l4
        && quote_l4 + 8 <= end;
    // About our own tunnel packet: only `answer_tunnel_error_v6` may answer it.
    if error.tunnel.is_some() {
        return Err(Reason::IcmpQuotedProtocol);
    }
    if !view.is_icmp_error() || !quote_fits {
        return Err(Reason::ViewMismatch);
    }
    // An ICMPv6 error is never answered with another: both gates drop instead of replying.
    egress::hop_limit_gate(frame, view, view.dst)?;
    egress::mtu_gate6(frame, view, egress.mtu, view.dst)?;

    let (outer_field, quote_field, port_field) = match toward {
        Side::RealServer => (ipv6::DESTINATION, ipv6::SOURCE, tcp::SRC_PORT),
        Side::Client => (ipv6::SOURCE, ipv6::DESTINATION, tcp::DST_PORT),
    };
    let new_address = endpoint.ip().to_bits();
    // The quoted transport checksum is patched only when the quote holds both its bytes.
    let quote_checksum = L4Checksum::locate(error.flow.protocol, quote_l4, end);
    let packet = frame.data_mut();
    let hop_limit = packet
        .get_mut(ip + ipv6::HOP_LIMIT)
        .ok_or(Reason::ViewMismatch)?;
    *hop_limit = hop_limit.wrapping_sub(1);
    set_address(packet, at(ip, outer_field), new_address)?;
    let mut delta = Delta::default();
    let old_quoted = set_address(packet, at(quote_ip, quote_field), new_address)?;
    delta.replace_u128(old_quoted, new_address);
    let port_at = at(quote_l4, port_field);
    let old_port = field::read_u16(packet, port_at.clone()).ok_or(Reason::ViewMismatch)?;
    field::write_u16(packet, port_at, endpoint.port()).ok_or(Reason::ViewMismatch)?;
    delta.replace_u16(old_port, endpoint.port());
    quote_checksum.patch(packet, |c| delta.apply(c))?;

    // The ICMPv6 checksum covers the new outer addresses and the whole quote: recompute it.
    let (src, dst) = {
        let header = packet
            .get(ip..ip + ipv6::HEADER_LEN)
            .ok_or(Reason::ViewMismatch)?;
        let header = Ipv6Packet::new_unchecked(header);
        (header.src_addr(), header.dst_addr())
    };
    let message = packet
        .get_mut(icmp_start..end)
        .ok_or(Reason::ViewMismatch)?;
    Icmpv6Packet::new_checked(message)
        .map_err(|_| Reason::ViewMismatch)?
        .fill_checksum(src, dst);
    egress::write_macs(packet, egress)?;
    egress::trim_after_datagram6(frame, view);
    Ok(Transmit::Forward)
}

/// Writes a 128-bit address at `place`; the old one.
fn set_address(packet: &mut [u8], place: field::Field, new: u128) -> Result<u128, Reason> {
    let slot = packet
        .get_mut(place)
        .and_then(|bytes| bytes.first_chunk_mut::<16>())
        .ok_or(Reason::ViewMismatch)?;
    let old = u128::from_be_bytes(*slot);
    *slot = new.to_be_bytes();
    Ok(old)
}
