//! Network address translation (`ipvsadm -m`, "masquerading"; IPVS `ip_vs_nat_xmit` with the
//! protocols' `dnat_handler`, and `handle_response` with `snat_handler` on the way back).
//!
//! Inbound (client -> VIP:vport): destination becomes the real server's address and port.
//! Outbound (real server -> client, routed back through the director): source becomes
//! VIP:vport again. The real server's port may differ from the virtual port.
//!
//! Checksums are patched incrementally (RFC 1624, as `tcp_fast_csum_update` /
//! `udp_fast_csum_update` do): the IPv4 header checksum for the address and TTL, the TCP/UDP
//! checksum for the address (pseudo-header) and the port. A UDP checksum of 0 means "none" and
//! stays 0. The payload is never read.
//!
//! Like IPVS (the director routes these packets), the TTL is decremented; a packet arriving with
//! TTL <= 1 is answered with "time exceeded" instead.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::edit::{self, L4Checksum};
use crate::egress::{self, Egress, Transmit};
use crate::field::{ipv4, tcp, udp};
use crate::{Frame, L4, PacketView, Reason};

/// Client -> VIP:vport becomes client -> `real_server`.
///
/// Before rewriting: TTL <= 1 answers "time exceeded" from the VIP; a DF datagram above
/// `egress.mtu` answers "fragmentation needed" from the VIP; a non-DF one is dropped
/// (`TooBig`). Only TCP and UDP are translated (`UnsupportedProtocol` otherwise; ICMP errors
/// have their own rewrite in `icmp`).
#[inline]
pub fn rewrite_inbound(
    frame: &mut Frame<'_>,
    view: &PacketView,
    real_server: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    translate(
        frame,
        view,
        Direction::Inbound,
        real_server,
        view.dst,
        egress,
    )
}

/// Real server -> client becomes `virtual_service` (VIP:vport) -> client.
///
/// Replies the director must refuse (TTL, MTU) are answered from the VIP, the address the
/// real server reaches the world through.
#[inline]
pub fn rewrite_outbound(
    frame: &mut Frame<'_>,
    view: &PacketView,
    virtual_service: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    let vip = *virtual_service.ip();
    translate(
        frame,
        view,
        Direction::Outbound,
        virtual_service,
        vip,
        egress,
    )
}

#[derive(Clone, Copy)]
enum Direction {
    /// Rewrite the destination (DNAT).
    Inbound,
    /// Rewrite the source (SNAT).
    Outbound,
}

#[inline]
fn translate(
    frame: &mut Frame<'_>,
    view: &PacketView,
    direction: Direction,
    new_endpoint: SocketAddrV4,
    reply_source: Ipv4Addr,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    if !matches!(view.l4, L4::Tcp { .. } | L4::Udp { .. }) {
        return Err(Reason::UnsupportedProtocol);
    }
    if let Some(reply) = egress::ttl_gate(frame, view, reply_source)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate(frame, view, egress.mtu, reply_source)? {
        return Ok(reply);
    }
    let ip = usize::from(view.ip_offset);
    let l4 = usize::from(view.l4_offset);
    let l4_checksum = L4Checksum::locate(view.protocol(), l4, view.ip_end());
    let (address_field, port_field) = match (direction, view.l4) {
        (Direction::Inbound, L4::Tcp { .. }) => (ipv4::DESTINATION, tcp::DST_PORT),
        (Direction::Inbound, _) => (ipv4::DESTINATION, udp::DST_PORT),
        (Direction::Outbound, L4::Tcp { .. }) => (ipv4::SOURCE, tcp::SRC_PORT),
        (Direction::Outbound, _) => (ipv4::SOURCE, udp::SRC_PORT),
    };
    let packet = frame.data_mut();
    edit::decrement_ttl(packet, ip)?;
    edit::set_address(
        packet,
        ip,
        address_field,
        new_endpoint.ip().to_bits(),
        l4_checksum,
    )?;
    edit::set_port(packet, l4, port_field, new_endpoint.port(), l4_checksum)?;
    egress::write_macs(packet, egress)?;
    Ok(Transmit::Forward)
}
