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
use crate::{Frame, PacketView, Reason};

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
