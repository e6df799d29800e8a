//! Direct routing (`ipvsadm -g`, IPVS `ip_vs_dr_xmit`).
//!
//! The real server holds the VIP on a non-ARPing interface, so the director only re-addresses
//! the Ethernet frame: destination MAC = the real server, source MAC = the egress interface.
//! The IP datagram is not touched (no address, TTL or checksum change), and the real server
//! answers the client directly.
//!
//! Divergence, on purpose: since Linux 3.x IPVS also decrements the TTL in DR mode; this crate
//! follows the classic LVS-DR contract (the datagram leaves exactly as it came), which the
//! xvs issue specifies.

use crate::egress::{self, Egress, Transmit};
use crate::{Frame, PacketView, PacketView6, Reason};

/// Rewrites `frame` for direct routing to the real server behind `egress.dst_mac`.
///
/// IPVS rule (`ensure_mtu_is_adequate`): a DF datagram larger than `egress.mtu` is answered
/// with "fragmentation needed" from the VIP (the packet's destination); without DF it is
/// dropped (`Reason::TooBig`). ICMP errors for a DR connection go through here unchanged too
/// (IPVS `ip_vs_icmp_xmit` uses the connection's own transmitter for DR and TUN).
#[inline]
pub fn forward(
    frame: &mut Frame<'_>,
    view: &PacketView,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    if let Some(reply) = egress::mtu_gate(frame, view, egress.mtu, view.dst)? {
        return Ok(reply);
    }
    readdress(frame, view, egress)
}

/// The DR rewrite itself, for a frame already known to fit `egress.mtu` (the fast path
/// checked it): only the Ethernet addresses change, and bytes after the datagram beyond the
/// Ethernet minimum are cut (see `egress::trim_after_datagram`).
#[inline(always)]
pub fn readdress(
    frame: &mut Frame<'_>,
    view: &PacketView,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    egress::write_macs(frame.data_mut(), egress)?;
    egress::trim_after_datagram(frame, view);
    Ok(Transmit::Forward)
}

/// [`forward`] for IPv6 (IPVS `ip_vs_dr_xmit_v6`): the Ethernet addresses change, the
/// datagram does not (the hop limit is left as it came, like the TTL in [`forward`]).
/// A packet larger than `egress.mtu` is answered with an ICMPv6 Packet Too Big from the
/// VIP (IPv6 has no DF: every oversized packet gets one, except ICMPv6 errors, dropped as
/// `TooBig`), reported as `Transmit::FragmentationNeededToSender`.
pub fn forward_v6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    egress: &Egress,
) -> Result<Transmit, Reason> {
    view.check_fits(frame)?;
    if let Some(reply) = egress::mtu_gate6(frame, view, egress.mtu, view.dst)? {
        return Ok(reply);
    }
    egress::write_macs(frame.data_mut(), egress)?;
    egress::trim_after_datagram6(frame, view);
    Ok(Transmit::Forward)
}
