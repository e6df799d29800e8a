//! ICMP errors the director itself sends back to a packet's sender, built in place around the
//! packet they quote: "fragmentation needed" when a DF packet will not fit the egress MTU
//! (IPVS `ensure_mtu_is_adequate` -> `icmp_send(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu)`), and
//! "time exceeded" when the TTL runs out (IPVS `decrement_ttl`).
//!
//! Layout: `[eth 14][ip 20][icmp 8][quoted original IP datagram, at most 548 bytes]`. With 28
//! bytes of headroom the quoted bytes stay where they are and only 42 header bytes are written in
//! front of them; with less, the quoted bytes are shifted within the buffer (a rare path).

use core::net::Ipv4Addr;

use crate::field::{eth, icmp, ipv4};
use crate::wire::{EthernetFrame, IcmpPacket, Ipv4Packet, ethertype, protocol};
use crate::{Frame, PacketView, Reason};

/// RFC 1812 4.3.2.3: an ICMP error carries as much of the original as fits in 576 bytes.
const MAX_ERROR_DATAGRAM: usize = 576;
/// Bytes in front of the quoted datagram: Ethernet, IPv4 and ICMP headers.
const REPLY_HEADERS: usize = eth::HEADER_LEN + ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN;
/// Linux answers with `(tos & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL`.
const TOS_MASK: u8 = 0x1e;
const PREC_INTERNETCONTROL: u8 = 0xc0;
/// The TTL Linux uses for locally generated packets (`ip_default_ttl`).
const REPLY_TTL: u8 = 64;

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IcmpReply {
    /// Destination unreachable / fragmentation needed, with the next-hop MTU.
    FragmentationNeeded { next_hop_mtu: u16 },
    /// Time exceeded in transit.
    TimeExceeded,
}

/// Everything an ICMP error carries besides its quote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorMessage {
    pub kind: u8,
    pub code: u8,
    /// Bytes 4..8 of the ICMP header (next-hop MTU, gateway, or zero).
    pub rest: u32,
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    /// TOS of the quoted datagram; the reply keeps its TOS bits, precedence 6.
    pub quoted_tos: u8,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// MTU of the link the message leaves by, when known and below 576: the quote is cut
    /// so the message fits it (as the kernel's `icmp_send` sizes to the route's MTU).
    pub mtu: u16,
}

/// Replaces the frame with an ICMP error addressed to the sender of `view`'s packet, from
/// `source`, sent back to the MAC it came from. Leaves the frame untouched and refuses with
/// `refusal` when the sender may not be answered (not a unicast address), or with
/// `NoHeadroom` when the buffer has no room.
pub(crate) fn write(
    frame: &mut Frame<'_>,
    view: &PacketView,
    reply: IcmpReply,
    source: Ipv4Addr,
    refusal: Reason,
) -> Result<(), Reason> {
    view.check_fits(frame)?;
    if !answerable(view.src) {
        return Err(refusal);
    }
    let ethernet = EthernetFrame::new_checked(frame.data()).map_err(|_| Reason::ViewMismatch)?;
    let (sender_mac, our_mac) = (ethernet.src_addr(), ethernet.dst_addr());
    let (kind, code, rest) = match reply {
        IcmpReply::FragmentationNeeded { next_hop_mtu } => (
            icmp::DEST_UNREACHABLE,
            icmp::CODE_FRAG_NEEDED,
            u32::from(next_hop_mtu),
        ),
        IcmpReply::TimeExceeded => (icmp::TIME_EXCEEDED, icmp::CODE_TTL_EXCEEDED, 0),
    };
    let message = ErrorMessage {
        kind,
        code,
        rest,
        source,
        destination: view.src,
        quoted_tos: view.tos,
        src_mac: our_mac,
        dst_mac: sender_mac,
        // It leaves by the ingress link, whose MTU the rewrites are not told.
        mtu: MAX_ERROR_DATAGRAM as u16,
    };
    let quote = usize::from(view.ip_offset)..view.ip_end();
    write_around_quote(frame, quote, &message)
}

/// Replaces the frame with the ICMP error `message` quoting the frame bytes in `quote` (frame
/// offsets; cut to 548 bytes). The quote stays in place when 42 bytes precede it in the
/// buffer, and is shifted within the buffer otherwise. Refuses `NoHeadroom` when neither fits,
/// leaving the frame untouched.
pub(crate) fn write_around_quote(
    frame: &mut Frame<'_>,
    quote: core::ops::Range<usize>,
    message: &ErrorMessage,
) -> Result<(), Reason> {
    if quote.start > quote.end || quote.end > frame.len() {
        return Err(Reason::ViewMismatch);
    }
    let max_datagram = MAX_ERROR_DATAGRAM.min(usize::from(message.mtu));
    let max_quote = max_datagram.saturating_sub(ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN);
    // An error quotes at least the IPv4 header and 8 bytes (RFC 792); a link that cannot
    // carry that (below IPv4's minimum MTU of 68) gets none.
    if max_quote < ipv4::MIN_HEADER_LEN + 8 {
        return Err(Reason::TooBig);
    }
    let (reply_at, reply_len) = place_quote(frame, quote, REPLY_HEADERS, max_quote)?;
    let tos = (message.quoted_tos & TOS_MASK) | PREC_INTERNETCONTROL;
    let out = frame
        .buffer_mut()
        .get_mut(reply_at..reply_at + reply_len)
        .ok_or(Reason::NoHeadroom)?;
    write_headers(
        out,
        message.dst_mac,
        message.src_mac,
        tos,
        message.source,
        message.destination,
        (message.kind, message.code, message.rest),
    )
    .ok_or(Reason::NoHeadroom)?;
    frame.set_range(reply_at, reply_len)
}

/// Where an error message of `headers` bytes in front of (at most `max_quote` bytes of) the
/// frame bytes `quote` goes: in place when the buffer has `headers` bytes before the quote,
/// else with the quote shifted to `headers` bytes past the frame start. Returns the buffer
/// offset and length of the message; `NoHeadroom` (nothing moved) when neither fits.
pub(crate) fn place_quote(
    frame: &mut Frame<'_>,
    quote: core::ops::Range<usize>,
    headers: usize,
    max_quote: usize,
) -> Result<(usize, usize), Reason> {
    if quote.start > quote.end || quote.end > frame.len() {
        return Err(Reason::ViewMismatch);
    }
    let quote_len = (quote.end - quote.start).min(max_quote);
    let quote_at = frame.start() + quote.start;
    let reply_len = headers + quote_len;
    let reply_at = if quote_at >= headers {
        quote_at - headers
    } else if frame.start() + reply_len <= frame.buffer_mut().len() {
        let reply_at = frame.start();
        frame
            .buffer_mut()
            .copy_within(quote_at..quote_at + quote_len, reply_at + headers);
        reply_at
    } else {
        return Err(Reason::NoHeadroom);
    };
    Ok((reply_at, reply_len))
}

/// Writes the three headers and both checksums into `out` (quoted bytes already in place).
fn write_headers(
    out: &mut [u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tos: u8,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    (kind, code, rest): (u8, u8, u32),
) -> Option<()> {
    const IP: usize = eth::HEADER_LEN;
    const L4: usize = IP + ipv4::MIN_HEADER_LEN;
    if out.len() < REPLY_HEADERS {
        return None;
    }
    let ip_len = u16::try_from(out.len() - IP).ok()?;
    let mut ethernet = EthernetFrame::new_unchecked(&mut *out);
    ethernet.set_dst_addr(dst_mac);
    ethernet.set_src_addr(src_mac);
    ethernet.set_ethertype(ethertype::IPV4);

    let mut ip = Ipv4Packet::new_unchecked(&mut out[IP..L4]);
    ip.set_version(4);
    ip.set_header_len(ipv4::MIN_HEADER_LEN);
    ip.set_tos(tos);
    ip.set_total_len(ip_len);
    // DF with ID 0: an atomic datagram (RFC 6864), never fragmented since it is <= 576 bytes.
    ip.set_ident(0);
    ip.set_flags_fragment(0);
    ip.set_dont_frag(true);
    ip.set_ttl(REPLY_TTL);
    ip.set_protocol(protocol::ICMP);
    ip.set_src_addr(source);
    ip.set_dst_addr(destination);
    ip.fill_checksum();

    let mut message = IcmpPacket::new_unchecked(&mut out[L4..]);
    message.set_msg_type(kind);
    message.set_msg_code(code);
    message.set_rest_of_header(rest);
    message.fill_checksum();
    Some(())
}

/// RFC 1122 3.2.2: never send an ICMP error to a source that does not name a single host.
pub(crate) fn answerable(source: Ipv4Addr) -> bool {
    !(source.is_unspecified()
        || source.is_broadcast()
        || source.is_multicast()
        || source.is_loopback())
}
