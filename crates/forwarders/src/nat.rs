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

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use crate::checksum::Delta;
use crate::egress::{self, Egress, Transmit};
use crate::field::{self, eth, ipv4, ipv6, tcp, udp};
use crate::wire::{Ipv4Packet, Ipv6Packet};
use crate::{Frame, L4, PacketView, PacketView6, Reason};

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

/// [`rewrite_inbound`] with the common case first: for the frame nearly every packet is —
/// `view` as [`parse_common`](crate::parse_common) gives it (untagged Ethernet, IPv4 without
/// options, a TCP or UDP header inside the datagram), TTL above 1, the datagram within
/// `egress.mtu` — neither gate can answer and the view fits, so the rewrite runs without
/// re-proving any of it. Every other frame takes [`rewrite_inbound`] itself: the result is
/// the same for every input (a test holds the two to it).
#[inline(always)]
pub fn rewrite_inbound_common(
    frame: &mut Frame<'_>,
    view: &PacketView,
    real_server: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    const IP_AT: usize = eth::HEADER_LEN;
    const L4_AT: usize = IP_AT + ipv4::MIN_HEADER_LEN;
    let (checksum_at, is_udp) = match view.l4 {
        L4::Tcp { .. } => (tcp::CHECKSUM.start, false),
        L4::Udp { .. } => (udp::CHECKSUM.start, true),
        L4::Icmp { .. } => return rewrite_inbound(frame, view, real_server, egress),
    };
    if view.ttl <= 1
        || view.ip_total_len > egress.mtu
        || usize::from(view.ip_offset) != IP_AT
        || usize::from(view.l4_offset) != L4_AT
        || view.check_fits(frame).is_err()
    {
        return rewrite_inbound(frame, view, real_server, egress);
    }
    let Some((ethernet, rest)) = frame.data_mut().split_first_chunk_mut::<IP_AT>() else {
        return Err(Reason::ViewMismatch);
    };
    let Some((ip_header, transport)) = rest.split_first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>()
    else {
        return Err(Reason::ViewMismatch);
    };
    let fields = (
        ipv4::DESTINATION.start,
        tcp::DST_PORT.start,
        checksum_at,
        is_udp,
    );
    match transport.first_chunk_mut::<18>() {
        Some(l4_header) => {
            rewrite_headers(ethernet, ip_header, l4_header, fields, real_server, egress)
        }
        None if is_udp => {
            translate_short_udp(
                ethernet,
                ip_header,
                transport,
                Direction::Inbound,
                real_server,
                egress,
            )?;
        }
        None => return Err(Reason::ViewMismatch),
    }
    egress::trim_after_datagram(frame, view);
    Ok(Transmit::Forward)
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

/// The translation, then the frame cut to its datagram (see `egress::trim_after_datagram`).
#[inline(always)]
fn translate(
    frame: &mut Frame<'_>,
    view: &PacketView,
    direction: Direction,
    new_endpoint: SocketAddrV4,
    reply_source: Ipv4Addr,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    let sent = translate_headers(frame, view, direction, new_endpoint, reply_source, egress)?;
    if sent == Transmit::Forward {
        egress::trim_after_datagram(frame, view);
    }
    Ok(sent)
}

#[inline(always)]
fn translate_headers(
    frame: &mut Frame<'_>,
    view: &PacketView,
    direction: Direction,
    new_endpoint: SocketAddrV4,
    reply_source: Ipv4Addr,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    // UDP's checksum sits at byte 6, TCP's at 16; both headers start with the two ports.
    let (checksum_at, is_udp) = match view.l4 {
        L4::Tcp { .. } => (tcp::CHECKSUM.start, false),
        L4::Udp { .. } => (udp::CHECKSUM.start, true),
        L4::Icmp { .. } => return Err(Reason::UnsupportedProtocol),
    };
    if let Some(reply) = egress::ttl_gate(frame, view, reply_source)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate(frame, view, egress.mtu, reply_source)? {
        return Ok(reply);
    }
    let (address_at, port_at) = match direction {
        Direction::Inbound => (ipv4::DESTINATION.start, tcp::DST_PORT.start),
        Direction::Outbound => (ipv4::SOURCE.start, tcp::SRC_PORT.start),
    };

    // Borrow the three headers once, as fixed-size arrays: no per-field bounds checks below.
    let ip = usize::from(view.ip_offset);
    let l4 = usize::from(view.l4_offset);
    let packet = frame.data_mut();
    let (front, transport) = packet
        .split_at_mut_checked(l4)
        .ok_or(Reason::ViewMismatch)?;
    let (ethernet, network) = front.split_at_mut_checked(ip).ok_or(Reason::ViewMismatch)?;
    let ethernet: &mut [u8; 14] = ethernet.first_chunk_mut().ok_or(Reason::ViewMismatch)?;
    let ip_header: &mut [u8; 20] = network.first_chunk_mut().ok_or(Reason::ViewMismatch)?;
    let l4_header: &mut [u8; 18] = match transport.first_chunk_mut::<18>() {
        Some(header) => header,
        // A UDP datagram may be shorter than 18 bytes: rewrite its 8-byte header.
        None if is_udp => {
            return translate_short_udp(
                ethernet,
                ip_header,
                transport,
                direction,
                new_endpoint,
                egress,
            );
        }
        None => return Err(Reason::ViewMismatch),
    };
    rewrite_headers(
        ethernet,
        ip_header,
        l4_header,
        (address_at, port_at, checksum_at, is_udp),
        new_endpoint,
        egress,
    );
    Ok(Transmit::Forward)
}

/// The rewrite proper, on validated fixed-size headers: TTL - 1, one address, one port, both
/// checksums patched with a single RFC 1624 delta each, then the MACs.
#[inline(always)]
fn rewrite_headers<const L4_LEN: usize>(
    ethernet: &mut [u8; 14],
    ip_header: &mut [u8; 20],
    l4_header: &mut [u8; L4_LEN],
    (address_at, port_at, checksum_at, is_udp): (usize, usize, usize, bool),
    new_endpoint: SocketAddrV4,
    egress: &Egress,
) {
    let mut ip_delta = Delta::default();
    let mut l4_delta = Delta::default();

    // IPVS decrement_ttl (the caller's gate guaranteed TTL > 1).
    Ipv4Packet::new_unchecked(&mut *ip_header).decrement_ttl_noting(&mut ip_delta);

    // The address: in the IPv4 header checksum and in the TCP/UDP pseudo-header.
    let new_address = new_endpoint.ip().to_bits();
    let old_address = read_u32(ip_header, address_at);
    write_u32(ip_header, address_at, new_address);
    ip_delta.replace_u32(old_address, new_address);
    l4_delta.replace_u32(old_address, new_address);

    // The port: in the TCP/UDP checksum only.
    let old_port = read_u16(l4_header, port_at);
    write_u16(l4_header, port_at, new_endpoint.port());
    l4_delta.replace_u16(old_port, new_endpoint.port());

    let ip_checksum = read_u16(ip_header, ipv4::CHECKSUM.start);
    write_u16(ip_header, ipv4::CHECKSUM.start, ip_delta.apply(ip_checksum));
    let l4_checksum = read_u16(l4_header, checksum_at);
    let l4_checksum = if is_udp {
        l4_delta.apply_udp(l4_checksum)
    } else {
        l4_delta.apply(l4_checksum)
    };
    write_u16(l4_header, checksum_at, l4_checksum);

    ethernet[eth::DESTINATION].copy_from_slice(&egress.dst_mac);
    ethernet[eth::SOURCE].copy_from_slice(&egress.src_mac);
}

/// UDP datagrams with less than 10 bytes of payload: the same rewrite on the 8-byte header.
#[cold]
fn translate_short_udp(
    ethernet: &mut [u8; 14],
    ip_header: &mut [u8; 20],
    transport: &mut [u8],
    direction: Direction,
    new_endpoint: SocketAddrV4,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    let udp_header: &mut [u8; 8] = transport.first_chunk_mut().ok_or(Reason::ViewMismatch)?;
    let (address_at, port_at) = match direction {
        Direction::Inbound => (ipv4::DESTINATION.start, udp::DST_PORT.start),
        Direction::Outbound => (ipv4::SOURCE.start, udp::SRC_PORT.start),
    };
    rewrite_headers(
        ethernet,
        ip_header,
        udp_header,
        (address_at, port_at, udp::CHECKSUM.start, true),
        new_endpoint,
        egress,
    );
    Ok(Transmit::Forward)
}

// Fixed-offset accessors on fixed-size headers. Offsets are constants of this module (and
// `checksum_at` < 17), all within the array lengths above, so these never go out of bounds.
#[inline(always)]
fn read_u16<const N: usize>(header: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([header[at], header[at + 1]])
}

#[inline(always)]
fn write_u16<const N: usize>(header: &mut [u8; N], at: usize, value: u16) {
    header[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
fn read_u32<const N: usize>(header: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

#[inline(always)]
fn write_u32<const N: usize>(header: &mut [u8; N], at: usize, value: u32) {
    header[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// [`rewrite_inbound`] for IPv6 (IPVS `ip_vs_nat_xmit_v6`): client -> VIP:vport becomes
/// client -> `real_server`. Hop limit <= 1 answers ICMPv6 Time Exceeded from the VIP; a
/// packet above `egress.mtu` answers Packet Too Big from the VIP
/// (`Transmit::FragmentationNeededToSender`). The hop limit is decremented; the TCP/UDP
/// checksum is patched for the 128-bit address and the port (IPv6 has no header checksum).
pub fn rewrite_inbound_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    real_server: SocketAddrV6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    translate6(
        frame,
        view,
        Direction::Inbound,
        real_server,
        view.dst,
        egress,
    )
}

/// [`rewrite_outbound`] for IPv6: real server -> client becomes `virtual_service` -> client.
pub fn rewrite_outbound_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    virtual_service: SocketAddrV6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    let vip = *virtual_service.ip();
    translate6(
        frame,
        view,
        Direction::Outbound,
        virtual_service,
        vip,
        egress,
    )
}

fn translate6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    direction: Direction,
    new_endpoint: SocketAddrV6,
    reply_source: Ipv6Addr,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    let (checksum_field, is_udp) = match view.l4 {
        L4::Tcp { .. } => (tcp::CHECKSUM, false),
        L4::Udp { .. } => (udp::CHECKSUM, true),
        L4::Icmp { .. } => return Err(Reason::UnsupportedProtocol),
    };
    if let Some(reply) = egress::hop_limit_gate(frame, view, reply_source)? {
        return Ok(reply);
    }
    if let Some(reply) = egress::mtu_gate6(frame, view, egress.mtu, reply_source)? {
        return Ok(reply);
    }
    let (address_field, port_field) = match direction {
        Direction::Inbound => (ipv6::DESTINATION, tcp::DST_PORT),
        Direction::Outbound => (ipv6::SOURCE, tcp::SRC_PORT),
    };
    let ip = usize::from(view.ip_offset);
    let l4 = usize::from(view.l4_offset);
    let packet = frame.data_mut();
    let (front, transport) = packet
        .split_at_mut_checked(l4)
        .ok_or(Reason::ViewMismatch)?;
    let mut header = Ipv6Packet::new_unchecked(
        front
            .get_mut(ip..ip + ipv6::HEADER_LEN)
            .ok_or(Reason::ViewMismatch)?,
    );
    header.decrement_hop_limit();
    let address = front
        .get_mut(field::at(ip, address_field))
        .and_then(|bytes| bytes.first_chunk_mut::<16>())
        .ok_or(Reason::ViewMismatch)?;
    let old_address = u128::from_be_bytes(*address);
    let new_address = new_endpoint.ip().to_bits();
    *address = new_address.to_be_bytes();

    let mut delta = Delta::default();
    delta.replace_u128(old_address, new_address);
    let old_port = field::read_u16(transport, port_field.clone()).ok_or(Reason::ViewMismatch)?;
    field::write_u16(transport, port_field, new_endpoint.port()).ok_or(Reason::ViewMismatch)?;
    delta.replace_u16(old_port, new_endpoint.port());
    let old_checksum =
        field::read_u16(transport, checksum_field.clone()).ok_or(Reason::ViewMismatch)?;
    let new_checksum = if is_udp {
        delta.apply_udp(old_checksum)
    } else {
        delta.apply(old_checksum)
    };
    field::write_u16(transport, checksum_field, new_checksum).ok_or(Reason::ViewMismatch)?;
    egress::write_macs(packet, egress)?;
    egress::trim_after_datagram6(frame, view);
    Ok(Transmit::Forward)
}
