//! IP tunnelling (`ipvsadm -i`, IPVS `ip_vs_tunnel_xmit`): the client's datagram is wrapped in
//! an outer IPv4 header (IPIP, protocol 4) addressed to the real server, which decapsulates it,
//! sees the VIP it holds, and answers the client directly.
//!
//! The outer header is written into the frame's headroom: the Ethernet header moves 20 bytes
//! earlier and the inner datagram stays where it is, so the payload is never copied. Without
//! 20 bytes of headroom the frame is refused (`Reason::NoHeadroom`) and left unchanged.
//!
//! Outer header, as IPVS builds it: source = the configured director address, destination =
//! the real server, TOS copied from the inner header, TTL copied from the inner header after
//! its decrement, DF copied from the inner header (`sysctl pmtu_disc=1`, the default), a fresh
//! identification supplied by the caller (e.g. a per-worker counter), no options.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::egress::{self, Egress, Transmit};
use crate::field::{eth, ipv4, ipv6};
use crate::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, ethertype, protocol};
use crate::{Frame, PacketView, PacketView6, Reason};

/// Bytes the outer header adds.
pub const ENCAP_OVERHEAD: usize = ipv4::MIN_HEADER_LEN;
/// IPVS refuses a tunnel whose inner MTU would drop below the IPv4 minimum of 68.
const MIN_INNER_MTU: u16 = 68;

/// The outer header's addresses and identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// The director's tunnel source address.
    pub source: Ipv4Addr,
    /// The real server.
    pub real_server: Ipv4Addr,
    /// Identification for the outer header; a fresh value per packet.
    pub ident: u16,
}

/// Encapsulates `frame` in IPIP toward `tunnel.real_server`.
///
/// In order, as IPVS checks: TTL <= 1 answers "time exceeded" from the VIP; an inner datagram
/// larger than `egress.mtu - 20` answers, with DF, "fragmentation needed" carrying
/// `egress.mtu - 20` (the MTU the client must use so that the encapsulated packet fits), and
/// without DF is dropped (`TooBig`); then the headroom check. Any Ethernet padding after the
/// inner datagram is trimmed.
pub fn encapsulate(
    frame: &mut Frame<'_>,
    view: &PacketView,
    tunnel: &Tunnel,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let inner_mtu = egress.mtu.saturating_sub(ENCAP_OVERHEAD as u16);
    if inner_mtu < MIN_INNER_MTU {
        return Err(Reason::MtuTooSmall);
    }
    if let Some(reply) = egress::ttl_gate(frame, view, view.dst)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate(frame, view, inner_mtu, view.dst)? {
        return Ok(reply);
    }
    if frame.headroom() < ENCAP_OVERHEAD {
        return Err(Reason::NoHeadroom);
    }
    wrap(frame, view, tunnel, egress)
}

/// [`encapsulate`] with the common case first: an inner datagram with TTL above 1, within
/// the tunnel's inner MTU, in an untagged frame with the headroom, which `view` fits — no
/// gate can answer, so the header goes on without re-proving any of it. Every other frame
/// takes [`encapsulate`] itself: the result is the same for every input (a test holds the
/// two to it).
#[inline(always)]
pub fn encapsulate_common(
    frame: &mut Frame<'_>,
    view: &PacketView,
    tunnel: &Tunnel,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    let inner_mtu = egress.mtu.saturating_sub(ENCAP_OVERHEAD as u16);
    if inner_mtu < MIN_INNER_MTU
        || view.ttl <= 1
        || view.ip_total_len > inner_mtu
        || frame.headroom() < ENCAP_OVERHEAD
        || view.check_fits(frame).is_err()
    {
        return encapsulate(frame, view, tunnel, egress);
    }
    wrap(frame, view, tunnel, egress)
}

/// The encapsulation itself, past every gate (TTL, MTU, headroom, the view's fit).
#[inline(always)]
fn wrap(
    frame: &mut Frame<'_>,
    view: &PacketView,
    tunnel: &Tunnel,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    // The inner datagram keeps its place: it starts at start + ip_offset, and the new frame
    // places it at (start - 20) + 14 + 20. That holds for the untagged Ethernet `parse` accepts.
    if usize::from(view.ip_offset) != eth::HEADER_LEN {
        return Err(Reason::ViewMismatch);
    }
    let inner_len = usize::from(view.ip_total_len);
    let outer_len = u16::try_from(ENCAP_OVERHEAD + inner_len).map_err(|_| Reason::TooBig)?;
    let new_start = frame.start() - ENCAP_OVERHEAD;
    frame.set_range(new_start, eth::HEADER_LEN + ENCAP_OVERHEAD + inner_len)?;

    let packet = frame.data_mut();
    let (ethernet, rest) = packet
        .split_first_chunk_mut::<{ eth::HEADER_LEN }>()
        .ok_or(Reason::ViewMismatch)?;
    let (outer, inner) = rest
        .split_first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>()
        .ok_or(Reason::ViewMismatch)?;
    let mut inner = Ipv4Packet::new_unchecked(
        inner
            .first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>()
            .ok_or(Reason::ViewMismatch)?,
    );

    // IPVS decrements the inner TTL before copying it out (the gate guaranteed TTL > 1).
    let ttl = inner.decrement_ttl();

    *outer = outer_header(view, tunnel, outer_len, ttl);
    let mut ethernet = EthernetFrame::new_unchecked(ethernet);
    ethernet.set_dst_addr(egress.dst_mac);
    ethernet.set_src_addr(egress.src_mac);
    ethernet.set_ethertype(ethertype::IPV4);
    Ok(Transmit::Forward)
}

/// The outer IPv4 header, built in registers and stored in one go.
#[inline(always)]
fn outer_header(view: &PacketView, tunnel: &Tunnel, total_len: u16, ttl: u8) -> [u8; 20] {
    let mut header = [0u8; 20];
    let mut outer = Ipv4Packet::new_unchecked(&mut header);
    outer.set_version(4);
    outer.set_header_len(ipv4::MIN_HEADER_LEN);
    outer.set_tos(view.tos);
    outer.set_total_len(total_len);
    outer.set_ident(tunnel.ident);
    outer.set_dont_frag(view.dont_fragment);
    outer.set_ttl(ttl);
    outer.set_protocol(protocol::IPIP);
    outer.set_src_addr(tunnel.source);
    outer.set_dst_addr(tunnel.real_server);
    outer.fill_checksum();
    header
}

/// Bytes an outer IPv6 header adds.
pub const ENCAP_OVERHEAD_V6: usize = ipv6::HEADER_LEN;

/// The outer IPv6 header's addresses, for a tunnel to an IPv6 real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel6 {
    /// The director's tunnel source address.
    pub source: Ipv6Addr,
    /// The real server.
    pub real_server: Ipv6Addr,
}

/// IPv6-in-IPv6 toward `tunnel.real_server` (IPVS `ip_vs_tunnel_xmit_v6`): a 40-byte outer
/// header, next header 41, traffic class copied from the inner packet, flow label 0, hop
/// limit the inner one after its decrement, payload length the inner datagram.
///
/// In order, as IPVS checks: an inner MTU (`egress.mtu - 40`) below IPv6's 1280 refuses
/// (`MtuTooSmall`); hop limit <= 1 answers Time Exceeded from the VIP; an inner packet
/// above `egress.mtu - 40` answers Packet Too Big carrying `egress.mtu - 40`
/// (`Transmit::FragmentationNeededToSender`; ICMPv6 errors are dropped, `TooBig`); then
/// 40 bytes of headroom (`NoHeadroom`).
pub fn encapsulate_6in6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    tunnel: &Tunnel6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let inner_mtu = inner_mtu_v6(egress.mtu, ENCAP_OVERHEAD_V6)?;
    if let Some(reply) = egress::hop_limit_gate(frame, view, view.dst)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate6(frame, view, inner_mtu, view.dst)? {
        return Ok(reply);
    }
    let inner_len = view.datagram_len();
    let (outer, inner) = prepend(frame, view.ip_offset, ENCAP_OVERHEAD_V6, inner_len, egress)?;
    let hops = Ipv6Packet::new_unchecked(inner).decrement_hop_limit();
    let outer: &mut [u8; ipv6::HEADER_LEN] = outer.try_into().map_err(|_| Reason::ViewMismatch)?;
    *outer = outer_header_v6(
        tunnel,
        protocol::IPV6,
        view.traffic_class,
        hops,
        u16::try_from(inner_len).map_err(|_| Reason::TooBig)?,
    );
    Ok(Transmit::Forward)
}

/// IPv4-in-IPv6 toward an IPv6 real server, for an IPv4 service (IPVS allows a tunnel
/// destination of the other family): outer next header 4, traffic class the inner TOS,
/// hop limit the inner TTL after its decrement. The gates are IPv4's, on the inner packet:
/// TTL <= 1 answers "time exceeded", a DF packet above `egress.mtu - 40` answers
/// "fragmentation needed" carrying `egress.mtu - 40` (without DF it is dropped, `TooBig`);
/// an inner MTU below 68 refuses (`MtuTooSmall`).
pub fn encapsulate_4in6(
    frame: &mut Frame<'_>,
    view: &PacketView,
    tunnel: &Tunnel6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let inner_mtu = egress.mtu.saturating_sub(ENCAP_OVERHEAD_V6 as u16);
    if inner_mtu < MIN_INNER_MTU {
        return Err(Reason::MtuTooSmall);
    }
    if let Some(reply) = egress::ttl_gate(frame, view, view.dst)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate(frame, view, inner_mtu, view.dst)? {
        return Ok(reply);
    }
    let inner_len = usize::from(view.ip_total_len);
    let (outer, inner) = prepend(frame, view.ip_offset, ENCAP_OVERHEAD_V6, inner_len, egress)?;
    let inner: &mut [u8; ipv4::MIN_HEADER_LEN] =
        inner.first_chunk_mut().ok_or(Reason::ViewMismatch)?;
    let ttl = Ipv4Packet::new_unchecked(inner).decrement_ttl();
    let outer: &mut [u8; ipv6::HEADER_LEN] = outer.try_into().map_err(|_| Reason::ViewMismatch)?;
    *outer = outer_header_v6(tunnel, protocol::IPIP, view.tos, ttl, view.ip_total_len);
    Ok(Transmit::Forward)
}

/// IPv6-in-IPv4 toward an IPv4 real server, for an IPv6 service (IPVS `ip_vs_tunnel_xmit`
/// with an IPv6 packet): outer protocol 41, TOS the inner traffic class, TTL the inner hop
/// limit after its decrement, DF clear (IPVS sets no DF over an IPv6 packet), identification
/// from `tunnel`. The gates are IPv6's: an inner MTU (`egress.mtu - 20`) below 1280 refuses
/// (`MtuTooSmall`), hop limit <= 1 answers Time Exceeded, a packet above the inner MTU
/// answers Packet Too Big carrying it.
pub fn encapsulate_6in4(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    tunnel: &Tunnel,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let inner_mtu = inner_mtu_v6(egress.mtu, ENCAP_OVERHEAD)?;
    if let Some(reply) = egress::hop_limit_gate(frame, view, view.dst)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate6(frame, view, inner_mtu, view.dst)? {
        return Ok(reply);
    }
    let inner_len = view.datagram_len();
    let total_len = u16::try_from(ENCAP_OVERHEAD + inner_len).map_err(|_| Reason::TooBig)?;
    let (outer, inner) = prepend(frame, view.ip_offset, ENCAP_OVERHEAD, inner_len, egress)?;
    let hops = Ipv6Packet::new_unchecked(inner).decrement_hop_limit();
    let mut header = [0u8; ipv4::MIN_HEADER_LEN];
    let mut ip = Ipv4Packet::new_unchecked(&mut header);
    ip.set_version(4);
    ip.set_header_len(ipv4::MIN_HEADER_LEN);
    ip.set_tos(view.traffic_class);
    ip.set_total_len(total_len);
    ip.set_ident(tunnel.ident);
    ip.set_ttl(hops);
    ip.set_protocol(protocol::IPV6);
    ip.set_src_addr(tunnel.source);
    ip.set_dst_addr(tunnel.real_server);
    ip.fill_checksum();
    outer.copy_from_slice(&header);
    Ok(Transmit::Forward)
}

/// The inner MTU for an IPv6 packet behind `overhead` bytes; below 1280 the tunnel cannot
/// carry IPv6 (IPVS refuses the route) and no Packet Too Big may name less (RFC 8200 5).
fn inner_mtu_v6(mtu: u16, overhead: usize) -> Result<u16, Reason> {
    let inner = mtu.saturating_sub(overhead as u16);
    if inner < ipv6::MIN_MTU {
        return Err(Reason::MtuTooSmall);
    }
    Ok(inner)
}

/// Moves the frame start `overhead` bytes back, keeping the inner datagram (at
/// `ip_offset`, which must be 14) in place, and writes the new Ethernet header for `egress`
/// with the outer header's EtherType. Returns the outer header slot and the inner datagram.
fn prepend<'f>(
    frame: &'f mut Frame<'_>,
    ip_offset: u16,
    overhead: usize,
    inner_len: usize,
    egress: &Egress,
) -> Result<(&'f mut [u8], &'f mut [u8]), Reason> {
    if frame.headroom() < overhead {
        return Err(Reason::NoHeadroom);
    }
    if usize::from(ip_offset) != eth::HEADER_LEN {
        return Err(Reason::ViewMismatch);
    }
    let new_start = frame.start() - overhead;
    frame.set_range(new_start, eth::HEADER_LEN + overhead + inner_len)?;
    let packet = frame.data_mut();
    let (ethernet, rest) = packet
        .split_first_chunk_mut::<{ eth::HEADER_LEN }>()
        .ok_or(Reason::ViewMismatch)?;
    let mut ethernet = EthernetFrame::new_unchecked(ethernet);
    ethernet.set_dst_addr(egress.dst_mac);
    ethernet.set_src_addr(egress.src_mac);
    ethernet.set_ethertype(if overhead == ENCAP_OVERHEAD_V6 {
        ethertype::IPV6
    } else {
        ethertype::IPV4
    });
    Ok(rest.split_at_mut(overhead))
}

/// The outer IPv6 header of a tunnel packet.
fn outer_header_v6(
    tunnel: &Tunnel6,
    next_header: u8,
    traffic_class: u8,
    hop_limit: u8,
    payload_len: u16,
) -> [u8; ipv6::HEADER_LEN] {
    let mut header = [0u8; ipv6::HEADER_LEN];
    let mut ip = Ipv6Packet::new_unchecked(&mut header);
    ip.set_version(6);
    ip.set_traffic_class(traffic_class);
    ip.set_flow_label(0);
    ip.set_payload_len(payload_len);
    ip.set_next_header(next_header);
    ip.set_hop_limit(hop_limit);
    ip.set_src_addr(tunnel.source);
    ip.set_dst_addr(tunnel.real_server);
    header
}
