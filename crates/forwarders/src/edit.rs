//! In-place edits of IPv4 and TCP/UDP header fields with incremental checksum updates
//! (RFC 1624), for the ICMP-error rewrites, whose fields sit at offsets only known per packet
//! (NAT and TUN have their own fixed-size fast paths).
//!
//! Each edit reads the old value from the packet, writes the new one and patches the checksums
//! that cover it; all accesses are checked, so a mismatched offset refuses instead of panicking.

use crate::checksum;
use crate::field::{self, Field, at, ipv4, tcp, udp};
use crate::wire::Ipv4Packet;
use crate::{Reason, field::read_u16};

/// Which transport checksum covers a port or (through the pseudo-header) an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4Checksum {
    /// TCP checksum at this offset of the packet slice.
    Tcp(usize),
    /// UDP checksum at this offset; 0 means "none" and stays 0.
    Udp(usize),
    /// Not covered (ICMP, or a TCP checksum cut off in an ICMP quote).
    None,
}

impl L4Checksum {
    /// The transport checksum of the header at `l4`, for `protocol`, if it lies within `limit`.
    #[inline]
    pub(crate) fn locate(protocol: u8, l4: usize, limit: usize) -> Self {
        let (field, make): (Field, fn(usize) -> Self) = match protocol {
            ipv4::PROTO_TCP => (tcp::CHECKSUM, L4Checksum::Tcp),
            ipv4::PROTO_UDP => (udp::CHECKSUM, L4Checksum::Udp),
            _ => return L4Checksum::None,
        };
        if l4 + field.end <= limit {
            make(l4 + field.start)
        } else {
            L4Checksum::None
        }
    }

    /// Patches the covered checksum with `update` (UDP keeps a zero checksum as zero).
    #[inline]
    pub(crate) fn patch(
        self,
        packet: &mut [u8],
        update: impl FnOnce(u16) -> u16,
    ) -> Result<(), Reason> {
        let (at_offset, is_udp) = match self {
            L4Checksum::Tcp(offset) => (offset, false),
            L4Checksum::Udp(offset) => (offset, true),
            L4Checksum::None => return Ok(()),
        };
        let place = at_offset..at_offset + 2;
        let old = read_u16(packet, place.clone()).ok_or(Reason::ViewMismatch)?;
        let new = if is_udp {
            checksum::udp_update(old, update)
        } else {
            update(old)
        };
        field::write_u16(packet, place, new).ok_or(Reason::ViewMismatch)
    }
}

/// Replaces the IPv4 address in `field` of the header at `ip`, patching the header checksum
/// and the transport checksum (the address is part of its pseudo-header).
#[inline]
pub(crate) fn set_address(
    packet: &mut [u8],
    ip: usize,
    field: Field,
    new: u32,
    l4_checksum: L4Checksum,
) -> Result<(), Reason> {
    let place = at(ip, field);
    let old = field::read_u32(packet, place.clone()).ok_or(Reason::ViewMismatch)?;
    if old == new {
        return Ok(());
    }
    field::write_u32(packet, place, new).ok_or(Reason::ViewMismatch)?;
    patch_ip_checksum(packet, ip, |c| checksum::update_u32(c, old, new))?;
    l4_checksum.patch(packet, |c| checksum::update_u32(c, old, new))
}

/// Replaces the port in `field` of the transport header at `l4`, patching its checksum.
#[inline]
pub(crate) fn set_port(
    packet: &mut [u8],
    l4: usize,
    field: Field,
    new: u16,
    l4_checksum: L4Checksum,
) -> Result<(), Reason> {
    let place = at(l4, field);
    let old = read_u16(packet, place.clone()).ok_or(Reason::ViewMismatch)?;
    if old == new {
        return Ok(());
    }
    field::write_u16(packet, place, new).ok_or(Reason::ViewMismatch)?;
    l4_checksum.patch(packet, |c| checksum::update_u16(c, old, new))
}

/// Decrements the TTL of the header at `ip` (the caller checked it is above 1).
#[inline]
pub(crate) fn decrement_ttl(packet: &mut [u8], ip: usize) -> Result<(), Reason> {
    let header: &mut [u8; ipv4::MIN_HEADER_LEN] = packet
        .get_mut(ip..)
        .and_then(|rest| rest.first_chunk_mut())
        .ok_or(Reason::ViewMismatch)?;
    Ipv4Packet::new_unchecked(header).decrement_ttl();
    Ok(())
}

#[inline]
fn patch_ip_checksum(
    packet: &mut [u8],
    ip: usize,
    update: impl FnOnce(u16) -> u16,
) -> Result<(), Reason> {
    let place = at(ip, ipv4::CHECKSUM);
    let old = read_u16(packet, place.clone()).ok_or(Reason::ViewMismatch)?;
    field::write_u16(packet, place, update(old)).ok_or(Reason::ViewMismatch)
}
