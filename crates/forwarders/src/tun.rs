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

use crate::edit;
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, at, eth, ipv4};
use crate::{Frame, PacketView, Reason, checksum};

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
    let inner_ip = usize::from(view.ip_offset);
    if inner_ip != eth::HEADER_LEN {
        return Err(Reason::ViewMismatch);
    }
    edit::decrement_ttl(frame.data_mut(), inner_ip)?;
    let inner_len = usize::from(view.ip_total_len);
    let new_start = frame.start() - ENCAP_OVERHEAD;
    let new_len = eth::HEADER_LEN + ENCAP_OVERHEAD + inner_len;
    frame.set_range(new_start, new_len)?;
    let outer = OuterHeader {
        tos: view.tos,
        total_len: u16::try_from(ENCAP_OVERHEAD + inner_len).map_err(|_| Reason::TooBig)?,
        ident: tunnel.ident,
        dont_fragment: view.dont_fragment,
        ttl: view.ttl - 1,
        source: tunnel.source,
        destination: tunnel.real_server,
    };
    let packet = frame.data_mut();
    egress::write_macs(packet, egress)?;
    field::write_u16(packet, eth::ETHERTYPE, eth::ETHERTYPE_IPV4).ok_or(Reason::ViewMismatch)?;
    outer.write(packet).ok_or(Reason::ViewMismatch)?;
    Ok(Transmit::Forward)
}

struct OuterHeader {
    tos: u8,
    total_len: u16,
    ident: u16,
    dont_fragment: bool,
    ttl: u8,
    source: Ipv4Addr,
    destination: Ipv4Addr,
}

impl OuterHeader {
    /// Writes the header at offset 14 of `packet`, checksum included.
    #[inline]
    fn write(&self, packet: &mut [u8]) -> Option<()> {
        let ip = eth::HEADER_LEN;
        let flags = if self.dont_fragment { ipv4::FLAG_DF } else { 0 };
        *packet.get_mut(ip + ipv4::VERSION_IHL)? = 0x45;
        *packet.get_mut(ip + ipv4::TOS)? = self.tos;
        field::write_u16(packet, at(ip, ipv4::TOTAL_LEN), self.total_len)?;
        field::write_u16(packet, at(ip, ipv4::IDENTIFICATION), self.ident)?;
        field::write_u16(packet, at(ip, ipv4::FLAGS_FRAGMENT), flags)?;
        *packet.get_mut(ip + ipv4::TTL)? = self.ttl;
        *packet.get_mut(ip + ipv4::PROTOCOL)? = ipv4::PROTO_IPIP;
        field::write_u16(packet, at(ip, ipv4::CHECKSUM), 0)?;
        field::write_u32(packet, at(ip, ipv4::SOURCE), self.source.to_bits())?;
        field::write_u32(
            packet,
            at(ip, ipv4::DESTINATION),
            self.destination.to_bits(),
        )?;
        let sum = checksum::ipv4_header(packet.get(ip..ip + ipv4::MIN_HEADER_LEN)?);
        field::write_u16(packet, at(ip, ipv4::CHECKSUM), sum)
    }
}
