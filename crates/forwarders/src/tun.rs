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

use core::net::Ipv4Addr;

use crate::egress::{self, Egress, Transmit};
use crate::field::{eth, ipv4};
use crate::wire::{EthernetFrame, Ipv4Packet, ethertype, protocol};
use crate::{Frame, PacketView, Reason};

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
