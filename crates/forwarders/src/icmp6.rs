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
//! Not handled (refused `IcmpQuotedProtocol`): errors quoting one of our own tunnel packets
//! (6in6 / 4in6 / 6in4 toward a real server), which IPVS turns into an error to the client.

use core::net::SocketAddrV6;

use crate::checksum::Delta;
use crate::edit::L4Checksum;
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, at, icmpv6, ipv6, tcp};
use crate::fragments::Fragmentation;
use crate::wire::{Icmpv6Packet, Ipv6Packet, walk_extension_headers};
use crate::{Frame, L4, PacketView6, Reason};

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

/// A validated ICMPv6 error and the offsets of its quote. `Copy`, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6ErrorView {
    /// ICMPv6 type (1 to 4).
    pub kind: u8,
    /// ICMPv6 code.
    pub code: u8,
    /// Bytes 4..8: the MTU of a Packet Too Big, the pointer of a Parameter Problem.
    pub rest: u32,
    /// Offset of the quoted IPv6 header in the frame.
    pub quote_ip_offset: u16,
    /// Offset of the quoted TCP/UDP header in the frame (after quoted extension headers).
    pub quote_l4_offset: u16,
    /// The quoted packet's flow, for the connection lookup.
    pub flow: QuotedFlow6,
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
    if quote.len() < ipv6::HEADER_LEN {
        return Err(Reason::IcmpQuoteTruncated);
    }
    // The quote may be cut anywhere: its payload length is not checked against it.
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
    if upper.protocol != ipv6::NEXT_TCP && upper.protocol != ipv6::NEXT_UDP {
        return Err(Reason::IcmpQuotedProtocol);
    }
    let l4 = after
        .get(upper.offset..upper.offset + 8)
        .ok_or(Reason::IcmpQuoteTruncated)?;
    let port = |place| field::read_u16(l4, place).ok_or(Reason::IcmpQuoteTruncated);
    let quote_ip_offset = icmp_start + icmpv6::HEADER_LEN;
    Ok(Icmpv6ErrorView {
        kind,
        code,
        rest: message.rest_of_header(),
        quote_ip_offset: quote_ip_offset as u16,
        quote_l4_offset: (quote_ip_offset + ipv6::HEADER_LEN + upper.offset) as u16,
        flow: QuotedFlow6 {
            protocol: upper.protocol,
            src: SocketAddrV6::new(quoted.src_addr(), port(tcp::SRC_PORT)?, 0, 0),
            dst: SocketAddrV6::new(quoted.dst_addr(), port(tcp::DST_PORT)?, 0, 0),
        },
    })
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
