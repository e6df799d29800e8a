//! Where a rewritten frame goes, and the two checks IPVS makes before any transmit:
//! the TTL (`decrement_ttl`) and the egress MTU (`ensure_mtu_is_adequate`).

use core::net::Ipv4Addr;

use crate::field::eth;
use crate::reply::{self, IcmpReply};
use crate::{Frame, PacketView, Reason};

/// The link the rewritten frame leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    /// MAC of the egress interface: the new Ethernet source.
    pub src_mac: [u8; 6],
    /// MAC of the next hop (the real server in DR, its gateway otherwise): the new destination.
    pub dst_mac: [u8; 6],
    /// IP MTU of the egress link: the largest IPv4 datagram it carries.
    pub mtu: u16,
}

/// What the caller transmits after a successful rewrite. Every variant is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Transmit {
    /// The frame is the rewritten packet: send it out of the egress link.
    Forward,
    /// The packet had DF set and did not fit the egress MTU: the frame now holds an ICMP
    /// "fragmentation needed" for its sender (for IPv6, any packet above the MTU: an ICMPv6
    /// Packet Too Big). Send it back out of the ingress link.
    FragmentationNeededToSender,
    /// The TTL (IPv6: hop limit) ran out: the frame now holds an ICMP (ICMPv6) "time
    /// exceeded" for the sender.
    /// Send it back out of the ingress link.
    TimeExceededToSender,
}

impl Transmit {
    /// Number of variants, for counter arrays.
    pub const COUNT: usize = 3;
}

/// IPVS `decrement_ttl`: a packet that arrives with TTL <= 1 may not be forwarded; its sender
/// gets "time exceeded" unless the packet is itself an ICMP error (then it is dropped).
/// `Ok(None)` means go on (the caller then decrements the TTL).
#[inline]
pub(crate) fn ttl_gate(
    frame: &mut Frame<'_>,
    view: &PacketView,
    reply_source: Ipv4Addr,
) -> Result<Option<Transmit>, Reason> {
    if view.ttl > 1 {
        return Ok(None);
    }
    if view.is_icmp_error() {
        return Err(Reason::TtlExpired);
    }
    reply::write(
        frame,
        view,
        IcmpReply::TimeExceeded,
        reply_source,
        Reason::TtlExpired,
    )?;
    Ok(Some(Transmit::TimeExceededToSender))
}

/// IPVS `ensure_mtu_is_adequate`: a datagram larger than `mtu` with DF set earns its sender a
/// "fragmentation needed" carrying `mtu`; ICMP errors never get one (RFC 1122), and without DF
/// the packet is dropped and counted, since this forwarder does not fragment.
/// `Ok(None)` means it fits.
#[inline]
pub(crate) fn mtu_gate(
    frame: &mut Frame<'_>,
    view: &PacketView,
    mtu: u16,
    reply_source: Ipv4Addr,
) -> Result<Option<Transmit>, Reason> {
    if view.ip_total_len <= mtu {
        return Ok(None);
    }
    if !view.dont_fragment || view.is_icmp_error() {
        return Err(Reason::TooBig);
    }
    reply::write(
        frame,
        view,
        IcmpReply::FragmentationNeeded { next_hop_mtu: mtu },
        reply_source,
        Reason::TooBig,
    )?;
    Ok(Some(Transmit::FragmentationNeededToSender))
}

/// Ethernet's minimum frame without the FCS: a shorter datagram arrives padded to it.
const MIN_FRAME: usize = 60;

/// Cuts what follows the IP datagram in a forwarded frame, beyond Ethernet's minimum frame.
/// Padding up to 60 bytes stays (a NIC adds it anyway); longer trailing bytes are not part
/// of the datagram (the kernel trims them on receive, `ip_rcv`'s `pskb_trim_rcsum`), and
/// sent on they would take the frame past the egress MTU that `mtu_gate` checked.
#[inline(always)]
pub(crate) fn trim_after_datagram(frame: &mut Frame<'_>, view: &PacketView) {
    let keep = view.ip_end().max(MIN_FRAME);
    if frame.len() > keep {
        // Shorter than the frame: within the buffer, so this cannot fail.
        let _ = frame.set_range(frame.start(), keep);
    }
}

/// Sets the Ethernet addresses for the next hop (every method does this last): destination
/// then source, the frame's first 12 bytes, checked once.
#[inline]
pub(crate) fn write_macs(packet: &mut [u8], egress: &Egress) -> Result<(), Reason> {
    let macs: &mut [u8; 12] = packet.first_chunk_mut().ok_or(Reason::ViewMismatch)?;
    macs[eth::DESTINATION].copy_from_slice(&egress.dst_mac);
    macs[eth::SOURCE].copy_from_slice(&egress.src_mac);
    Ok(())
}

/// [`ttl_gate`] for IPv6: a hop limit <= 1 earns the sender an ICMPv6 Time Exceeded (hop
/// limit exceeded), unless the packet is an ICMPv6 error (dropped, `TtlExpired`).
#[inline]
pub(crate) fn hop_limit_gate(
    frame: &mut Frame<'_>,
    view: &crate::PacketView6,
    reply_source: core::net::Ipv6Addr,
) -> Result<Option<Transmit>, Reason> {
    if view.hop_limit > 1 {
        return Ok(None);
    }
    if view.is_icmp_error() {
        return Err(Reason::TtlExpired);
    }
    crate::reply6::write6(
        frame,
        view,
        crate::reply6::Icmpv6Reply::HopLimitExceeded,
        reply_source,
        Reason::TtlExpired,
    )?;
    Ok(Some(Transmit::TimeExceededToSender))
}

/// [`mtu_gate`] for IPv6 (IPVS `__mtu_check_toobig_v6`): routers never fragment IPv6, so a
/// packet larger than `mtu` always earns its sender a Packet Too Big carrying `mtu`
/// (reported as `Transmit::FragmentationNeededToSender`), except an ICMPv6 error, which is
/// dropped (`TooBig`).
#[inline]
pub(crate) fn mtu_gate6(
    frame: &mut Frame<'_>,
    view: &crate::PacketView6,
    mtu: u16,
    reply_source: core::net::Ipv6Addr,
) -> Result<Option<Transmit>, Reason> {
    if view.datagram_len() <= usize::from(mtu) {
        return Ok(None);
    }
    if view.is_icmp_error() {
        return Err(Reason::TooBig);
    }
    crate::reply6::write6(
        frame,
        view,
        crate::reply6::Icmpv6Reply::PacketTooBig {
            mtu: u32::from(mtu),
        },
        reply_source,
        Reason::TooBig,
    )?;
    Ok(Some(Transmit::FragmentationNeededToSender))
}

/// [`trim_after_datagram`] for an IPv6 frame.
#[inline]
pub(crate) fn trim_after_datagram6(frame: &mut Frame<'_>, view: &crate::PacketView6) {
    let keep = view.ip_end().max(MIN_FRAME);
    if frame.len() > keep {
        let _ = frame.set_range(frame.start(), keep);
    }
}
