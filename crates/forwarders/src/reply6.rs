//! ICMPv6 errors the director itself sends back to a packet's sender (RFC 4443), built in
//! place around the packet they quote, as `reply` does for ICMPv4: Packet Too Big when a
//! packet will not fit the egress MTU (IPVS `ensure_mtu_is_adequate` ->
//! `icmpv6_send(ICMPV6_PKT_TOOBIG, 0, mtu)`), and Time Exceeded when the hop limit runs out.
//!
//! Layout: `[eth 14][ipv6 40][icmpv6 8][quoted packet, at most 1232 bytes]` (RFC 4443 2.4 c:
//! as much as fits in the minimum MTU of 1280). With 48 bytes of headroom
//! ([`RECOMMENDED_HEADROOM_V6`]) the quoted bytes stay where they are; with less they are
//! shifted within the buffer.

use core::net::Ipv6Addr;

use crate::field::{eth, icmpv6, ipv6};
use crate::reply::place_quote;
use crate::wire::{EthernetFrame, Icmpv6Packet, Ipv6Packet, ethertype, protocol};
use crate::{Frame, PacketView6, Reason};

/// Headroom that lets the IPv6 rewrites work without moving bytes: 40 for an IPv6 outer
/// header, 48 for an ICMPv6 error built around the packet it quotes.
pub const RECOMMENDED_HEADROOM_V6: usize = 48;

/// RFC 4443 2.4 c: an ICMPv6 error does not exceed the minimum IPv6 MTU.
const MAX_ERROR_DATAGRAM: usize = ipv6::MIN_MTU as usize;
/// Bytes in front of the quoted packet: Ethernet, IPv6 and ICMPv6 headers.
const REPLY_HEADERS: usize = eth::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
/// Linux's default hop limit for locally generated packets.
const REPLY_HOP_LIMIT: u8 = 64;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Icmpv6Reply {
    /// Packet Too Big with the MTU the sender must use.
    PacketTooBig { mtu: u32 },
    /// Time Exceeded, hop limit exceeded in transit.
    HopLimitExceeded,
}

/// Everything an ICMPv6 error carries besides its quote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorMessage6 {
    pub kind: u8,
    pub code: u8,
    /// Bytes 4..8 of the ICMPv6 header (the MTU, the pointer, or zero).
    pub rest: u32,
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// MTU of the link the message leaves by: the quote is cut so the message fits it.
    pub mtu: u16,
}

/// Replaces the frame with an ICMPv6 error to the sender of `view`'s packet, from `source`,
/// back to the MAC it came from. Refuses with `refusal` (frame untouched) when the sender
/// may not be answered, `NoHeadroom` when the buffer has no room.
pub(crate) fn write6(
    frame: &mut Frame<'_>,
    view: &PacketView6,
    reply: Icmpv6Reply,
    source: Ipv6Addr,
    refusal: Reason,
) -> Result<(), Reason> {
    view.check_fits(frame)?;
    if !answerable6(view.src) {
        return Err(refusal);
    }
    let ethernet = EthernetFrame::new_checked(frame.data()).map_err(|_| Reason::ViewMismatch)?;
    let (sender_mac, our_mac) = (ethernet.src_addr(), ethernet.dst_addr());
    let (kind, code, rest) = match reply {
        Icmpv6Reply::PacketTooBig { mtu } => (icmpv6::PACKET_TOO_BIG, 0, mtu),
        Icmpv6Reply::HopLimitExceeded => {
            (icmpv6::TIME_EXCEEDED, icmpv6::CODE_HOP_LIMIT_EXCEEDED, 0)
        }
    };
    let message = ErrorMessage6 {
        kind,
        code,
        rest,
        source,
        destination: view.src,
        src_mac: our_mac,
        dst_mac: sender_mac,
        // It leaves by the ingress link, whose MTU the rewrites are not told.
        mtu: ipv6::MIN_MTU,
    };
    let quote = usize::from(view.ip_offset)..view.ip_end();
    write6_around_quote(frame, quote, &message)
}

/// Replaces the frame with the ICMPv6 error `message` quoting the frame bytes in `quote`
/// (frame offsets; cut so the message fits 1280 bytes and `message.mtu`). The quote stays
/// in place when 62 bytes precede it in the buffer and is shifted otherwise; `NoHeadroom`
/// (frame untouched) when neither fits.
pub(crate) fn write6_around_quote(
    frame: &mut Frame<'_>,
    quote: core::ops::Range<usize>,
    message: &ErrorMessage6,
) -> Result<(), Reason> {
    let max_datagram = MAX_ERROR_DATAGRAM.min(usize::from(message.mtu));
    let max_quote = max_datagram.saturating_sub(ipv6::HEADER_LEN + icmpv6::HEADER_LEN);
    // An error quotes at least the IPv6 header and 8 bytes.
    if max_quote < ipv6::HEADER_LEN + 8 {
        return Err(Reason::TooBig);
    }
    let (reply_at, reply_len) = place_quote(frame, quote, REPLY_HEADERS, max_quote)?;
    let out = frame
        .buffer_mut()
        .get_mut(reply_at..reply_at + reply_len)
        .ok_or(Reason::NoHeadroom)?;
    let payload_len = u16::try_from(reply_len - eth::HEADER_LEN - ipv6::HEADER_LEN)
        .map_err(|_| Reason::NoHeadroom)?;
    let mut ethernet = EthernetFrame::new_unchecked(&mut *out);
    ethernet.set_dst_addr(message.dst_mac);
    ethernet.set_src_addr(message.src_mac);
    ethernet.set_ethertype(ethertype::IPV6);
    let (_, rest_of_frame) = out.split_at_mut(eth::HEADER_LEN);
    let (ip_header, icmp_message) = rest_of_frame.split_at_mut(ipv6::HEADER_LEN);
    let mut ip = Ipv6Packet::new_unchecked(ip_header);
    ip.set_version(6);
    ip.set_traffic_class(0);
    ip.set_flow_label(0);
    ip.set_payload_len(payload_len);
    ip.set_next_header(protocol::ICMPV6);
    ip.set_hop_limit(REPLY_HOP_LIMIT);
    ip.set_src_addr(message.source);
    ip.set_dst_addr(message.destination);
    let mut icmp = Icmpv6Packet::new_unchecked(icmp_message);
    icmp.set_msg_type(message.kind);
    icmp.set_msg_code(message.code);
    icmp.set_rest_of_header(message.rest);
    icmp.fill_checksum(message.source, message.destination);
    frame.set_range(reply_at, reply_len)
}

/// RFC 4443 2.4 e: no error to a source that does not name a single host.
pub(crate) fn answerable6(source: Ipv6Addr) -> bool {
    !(source.is_unspecified() || source.is_multicast() || source.is_loopback())
}
