//! ICMP errors the director itself sends back to a packet's sender, built in place around the
//! packet they quote: "fragmentation needed" when a DF packet will not fit the egress MTU
//! (IPVS `ensure_mtu_is_adequate` -> `icmp_send(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu)`), and
//! "time exceeded" when the TTL runs out (IPVS `decrement_ttl`).
//!
//! Layout: `[eth 14][ip 20][icmp 8][quoted original IP datagram, at most 548 bytes]`. With 28
//! bytes of headroom the quoted bytes stay where they are and only 42 header bytes are written in
//! front of them; with less, the quoted bytes are shifted within the buffer (a rare path).

use core::net::Ipv4Addr;

use crate::field::{self, at, eth, icmp, ipv4};
use crate::{Frame, PacketView, Reason, checksum};

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
    let sender_mac = field::read_mac(frame.data(), eth::SOURCE).ok_or(Reason::ViewMismatch)?;
    let our_mac = field::read_mac(frame.data(), eth::DESTINATION).ok_or(Reason::ViewMismatch)?;
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
    let quote_len = (quote.end - quote.start).min(max_quote);
    let quote_at = frame.start() + quote.start;
    let reply_len = REPLY_HEADERS + quote_len;
    let reply_at = if quote_at >= REPLY_HEADERS {
        quote_at - REPLY_HEADERS
    } else if frame.start() + reply_len <= frame.buffer_mut().len() {
        let reply_at = frame.start();
        frame
            .buffer_mut()
            .copy_within(quote_at..quote_at + quote_len, reply_at + REPLY_HEADERS);
        reply_at
    } else {
        return Err(Reason::NoHeadroom);
    };
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
    let ip = eth::HEADER_LEN;
    let l4 = ip + ipv4::MIN_HEADER_LEN;
    let ip_len = u16::try_from(out.len() - ip).ok()?;
    field::write_mac(out, eth::DESTINATION, dst_mac)?;
    field::write_mac(out, eth::SOURCE, src_mac)?;
    field::write_u16(out, eth::ETHERTYPE, eth::ETHERTYPE_IPV4)?;
    *out.get_mut(ip + ipv4::VERSION_IHL)? = 0x45;
    *out.get_mut(ip + ipv4::TOS)? = tos;
    field::write_u16(out, at(ip, ipv4::TOTAL_LEN), ip_len)?;
    // DF with ID 0: an atomic datagram (RFC 6864), never fragmented since it is <= 576 bytes.
    field::write_u16(out, at(ip, ipv4::IDENTIFICATION), 0)?;
    field::write_u16(out, at(ip, ipv4::FLAGS_FRAGMENT), ipv4::FLAG_DF)?;
    *out.get_mut(ip + ipv4::TTL)? = REPLY_TTL;
    *out.get_mut(ip + ipv4::PROTOCOL)? = ipv4::PROTO_ICMP;
    field::write_u16(out, at(ip, ipv4::CHECKSUM), 0)?;
    field::write_u32(out, at(ip, ipv4::SOURCE), source.to_bits())?;
    field::write_u32(out, at(ip, ipv4::DESTINATION), destination.to_bits())?;
    let ip_checksum = checksum::ipv4_header(out.get(ip..l4)?);
    field::write_u16(out, at(ip, ipv4::CHECKSUM), ip_checksum)?;

    *out.get_mut(l4 + icmp::TYPE)? = kind;
    *out.get_mut(l4 + icmp::CODE)? = code;
    field::write_u16(out, at(l4, icmp::CHECKSUM), 0)?;
    field::write_u32(out, at(l4, icmp::REST_OF_HEADER), rest)?;
    let icmp_checksum = checksum::checksum(out.get(l4..)?);
    field::write_u16(out, at(l4, icmp::CHECKSUM), icmp_checksum)
}

/// RFC 1122 3.2.2: never send an ICMP error to a source that does not name a single host.
pub(crate) fn answerable(source: Ipv4Addr) -> bool {
    !(source.is_unspecified()
        || source.is_broadcast()
        || source.is_multicast()
        || source.is_loopback())
}
