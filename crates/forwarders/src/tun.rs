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

use crate::checksum::{self, Delta};
use crate::egress::{self, Egress, Transmit};
use crate::field::{eth, ipv4};
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
    let inner: &mut [u8; 20] = inner.first_chunk_mut().ok_or(Reason::ViewMismatch)?;

    // IPVS decrements the inner TTL before copying it out (the gate guaranteed TTL > 1).
    let ttl = inner[ipv4::TTL].wrapping_sub(1);
    let ttl_word = u16::from_be_bytes([inner[ipv4::TTL], inner[ipv4::PROTOCOL]]);
    let mut delta = Delta::default();
    delta.replace_u16(ttl_word, ttl_word.wrapping_sub(0x0100));
    let checksum_bytes = [inner[ipv4::CHECKSUM.start], inner[ipv4::CHECKSUM.start + 1]];
    let inner_checksum = u16::from_be_bytes(checksum_bytes);
    inner[ipv4::TTL] = ttl;
    inner[ipv4::CHECKSUM].copy_from_slice(&delta.apply(inner_checksum).to_be_bytes());

    *outer = outer_header(view, tunnel, outer_len, ttl);
    ethernet[eth::DESTINATION].copy_from_slice(&egress.dst_mac);
    ethernet[eth::SOURCE].copy_from_slice(&egress.src_mac);
    ethernet[eth::ETHERTYPE].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
    Ok(Transmit::Forward)
}

/// The outer IPv4 header, built in registers and stored in one go.
#[inline(always)]
fn outer_header(view: &PacketView, tunnel: &Tunnel, total_len: u16, ttl: u8) -> [u8; 20] {
    let flags = if view.dont_fragment { ipv4::FLAG_DF } else { 0 };
    let mut header = [0u8; 20];
    header[ipv4::VERSION_IHL] = 0x45;
    header[ipv4::TOS] = view.tos;
    header[ipv4::TOTAL_LEN].copy_from_slice(&total_len.to_be_bytes());
    header[ipv4::IDENTIFICATION].copy_from_slice(&tunnel.ident.to_be_bytes());
    header[ipv4::FLAGS_FRAGMENT].copy_from_slice(&flags.to_be_bytes());
    header[ipv4::TTL] = ttl;
    header[ipv4::PROTOCOL] = ipv4::PROTO_IPIP;
    header[ipv4::SOURCE].copy_from_slice(&tunnel.source.octets());
    header[ipv4::DESTINATION].copy_from_slice(&tunnel.real_server.octets());
    let sum = checksum::ipv4_base_header(&header);
    header[ipv4::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    header
}
