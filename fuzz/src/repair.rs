//! Repairs a mutated frame's lengths and checksums (as the record's control byte asks), and
//! the checksum verifications the oracle uses. Sums come from etherparse's `checksum`
//! module, an implementation independent of `xvs_forwarders::checksum`.

use etherparse::checksum::Sum16BitWords;

use crate::input::Ctl;

// etherparse sums 16-bit words in the machine's byte order, so a checksum is written with
// `to_ne_bytes` (the ones'-complement sum is byte-order independent).

const ETH: usize = 14;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const IPV6_HEADER: usize = 40;
/// Most extension headers the repair walks past (the forwarders refuse longer chains; a
/// fuzzer's longer one stays unrepaired beyond this).
const MAX_EXTENSIONS: usize = 16;

/// Applies the repairs `ctl` asks for to an Ethernet/IPv4 or IPv6 frame; other frames are
/// left alone. Lengths first, then the IPv4 header checksum, then the transport checksum
/// (which for an ICMP error covers the quoted header, repaired before it).
pub fn repair(frame: &mut [u8], ctl: Ctl) {
    if frame.len() >= ETH + IPV6_HEADER && frame[12..14] == [0x86, 0xdd] {
        return repair6(frame, ctl);
    }
    let Some(ihl) = ipv4_header_len(frame) else {
        return;
    };
    if ctl.has(Ctl::FIX_LENGTHS) {
        let total = (frame.len() - ETH).min(usize::from(u16::MAX));
        frame[ETH + 2..ETH + 4].copy_from_slice(&(total as u16).to_be_bytes());
        if frame[ETH + 9] == UDP && total >= ihl + 8 {
            let at = ETH + ihl + 4;
            frame[at..at + 2].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
        }
    }
    if ctl.has(Ctl::FIX_IP) {
        set_ipv4_checksum(&mut frame[ETH..ETH + ihl]);
    }
    if ctl.has(Ctl::FIX_L4) {
        let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
        let end = (ETH + total).min(frame.len());
        if end < ETH + ihl {
            return;
        }
        let (header, l4) = frame[ETH..end].split_at_mut(ihl);
        let (src, dst) = addresses(header);
        match header[9] {
            ICMP if l4.len() >= 8 => {
                if ctl.has(Ctl::FIX_IP)
                    && matches!(l4[0], 3 | 11)
                    && let Some(quoted_ihl) = ipv4_header_len_at(&l4[8..])
                {
                    set_ipv4_checksum(&mut l4[8..8 + quoted_ihl]);
                }
                l4[2..4].fill(0);
                let sum = Sum16BitWords::new().add_slice(l4).ones_complement();
                l4[2..4].copy_from_slice(&sum.to_ne_bytes());
            }
            protocol => set_tcp_udp_checksum(l4, protocol, src, dst),
        }
    }
}

/// [`repair`] for an Ethernet/IPv6 frame: the payload length (and a UDP length after the
/// extension headers) to the bytes present, then the TCP/UDP/ICMPv6 checksum over the IPv6
/// pseudo-header. IPv6 has no header checksum, and neither has a quoted IPv6 header, so
/// `FIX_IP` only repairs the inner IPv4 header of a quoted IPv4-in-IPv6 packet.
fn repair6(frame: &mut [u8], ctl: Ctl) {
    if ctl.has(Ctl::FIX_LENGTHS) {
        let payload = (frame.len() - ETH - IPV6_HEADER).min(usize::from(u16::MAX));
        frame[ETH + 4..ETH + 6].copy_from_slice(&(payload as u16).to_be_bytes());
    }
    let payload_len = usize::from(u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]));
    let end = (ETH + IPV6_HEADER + payload_len).min(frame.len());
    let (header, payload) = frame[ETH..end].split_at_mut(IPV6_HEADER);
    let Some((protocol, at)) = upper_layer6(header[6], payload) else {
        return;
    };
    let l4 = &mut payload[at..];
    if ctl.has(Ctl::FIX_LENGTHS) && protocol == UDP && l4.len() >= 8 {
        let len = l4.len().min(usize::from(u16::MAX)) as u16;
        l4[4..6].copy_from_slice(&len.to_be_bytes());
    }
    if !ctl.has(Ctl::FIX_L4) {
        return;
    }
    let (src, dst) = (&header[8..24], &header[24..40]);
    match protocol {
        ICMPV6 if l4.len() >= 8 => {
            if ctl.has(Ctl::FIX_IP)
                && (1..=4).contains(&l4[0])
                && l4.len() >= 8 + IPV6_HEADER
                && l4[8] >> 4 == 6
                && let Some((4, inner_at)) = upper_layer6(l4[8 + 6], &l4[8 + IPV6_HEADER..])
                && let Some(ihl) = ipv4_header_len_at(&l4[8 + IPV6_HEADER + inner_at..])
            {
                let inner = 8 + IPV6_HEADER + inner_at;
                set_ipv4_checksum(&mut l4[inner..inner + ihl]);
            }
            set_transport_checksum(l4, 2, src, dst, ICMPV6)
        }
        protocol => set_tcp_udp_checksum(l4, protocol, src, dst),
    }
}

/// Sets the checksum of the TCP or UDP header at the start of `l4` over the IPv4 or IPv6
/// pseudo-header (a UDP one over the UDP length's bytes: the rest is IP padding); other
/// protocols and headers cut short are left alone.
fn set_tcp_udp_checksum(l4: &mut [u8], protocol: u8, src: &[u8], dst: &[u8]) {
    match protocol {
        TCP if l4.len() >= 20 => set_transport_checksum(l4, 16, src, dst, TCP),
        UDP if l4.len() >= 8 => {
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            let segment = if (8..=l4.len()).contains(&len) {
                &mut l4[..len]
            } else {
                l4
            };
            set_transport_checksum(segment, 6, src, dst, UDP)
        }
        _ => {}
    }
}

/// The upper-layer protocol after the IPv6 extension headers that start `payload` with
/// `next` as the fixed header's next header, and its offset in `payload`; `None` when a
/// header is cut short, the chain is longer than `MAX_EXTENSIONS` (16) or a later fragment
/// holds no upper-layer header.
pub fn upper_layer6(mut next: u8, payload: &[u8]) -> Option<(u8, usize)> {
    let mut at = 0;
    for _ in 0..MAX_EXTENSIONS {
        if !matches!(next, 0 | 43 | 44 | 51 | 60) {
            return Some((next, at));
        }
        let header = payload.get(at..at + 8)?;
        let len = match next {
            // Hop-by-hop, routing, destination options: (length + 1) 8-byte units.
            0 | 43 | 60 => (usize::from(header[1]) + 1) * 8,
            // A fragment header: the upper layer only follows in the first fragment.
            44 if u16::from_be_bytes([header[2], header[3]]) & 0xfff8 != 0 => return None,
            44 => 8,
            // An authentication header: (length + 2) 4-byte units.
            _ => (usize::from(header[1]) + 2) * 4,
        };
        next = header[0];
        at += len;
        if at > payload.len() {
            return None;
        }
    }
    None
}

/// The IPv4 header length of an Ethernet/IPv4 frame whose whole header is present.
pub fn ipv4_header_len(frame: &[u8]) -> Option<usize> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    ipv4_header_len_at(&frame[ETH..])
}

/// The header length of the IPv4 header at the start of `ip`, if version, IHL and length fit.
fn ipv4_header_len_at(ip: &[u8]) -> Option<usize> {
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    (first >> 4 == 4 && ihl >= 20 && ip.len() >= ihl).then_some(ihl)
}

fn addresses(header: &[u8]) -> (&[u8], &[u8]) {
    (&header[12..16], &header[16..20])
}

fn set_ipv4_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let sum = Sum16BitWords::new().add_slice(header).ones_complement();
    header[10..12].copy_from_slice(&sum.to_ne_bytes());
}

fn set_transport_checksum(segment: &mut [u8], at: usize, src: &[u8], dst: &[u8], protocol: u8) {
    segment[at..at + 2].fill(0);
    let sum = pseudo_header_sum(src, dst, protocol, segment).to_ones_complement_with_no_zero();
    segment[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
}

/// The sum of the IPv4 or IPv6 pseudo-header (by the addresses' length) and `segment`: the
/// two differ only in where the zero bytes of the protocol and length fields lie, which a
/// ones'-complement sum of 16-bit words does not see (segments stay under 64 KiB).
fn pseudo_header_sum(src: &[u8], dst: &[u8], protocol: u8, segment: &[u8]) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_slice(src)
        .add_slice(dst)
        .add_2bytes([0, protocol])
        .add_2bytes((segment.len() as u16).to_be_bytes())
        .add_slice(segment)
}

/// True when the ones'-complement sum of `bytes`, checksum field included, is all ones
/// (the receiver's check: it accepts both representations of zero in the field).
pub fn sum_verifies(bytes: &[u8]) -> bool {
    Sum16BitWords::new().add_slice(bytes).ones_complement() == 0
}

/// True when a TCP, UDP or ICMPv6 message's checksum verifies over the IPv4 or IPv6
/// pseudo-header of `src` and `dst` (a UDP checksum of 0, "none", does not verify here: the
/// caller decides what it means).
pub fn transport_verifies(src: &[u8], dst: &[u8], protocol: u8, segment: &[u8]) -> bool {
    pseudo_header_sum(src, dst, protocol, segment).ones_complement() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repaired_frames_verify_with_etherparse() {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 53);
        let mut frame = Vec::new();
        b.write(&mut frame, b"hello").unwrap();
        frame.extend_from_slice(b"+more");
        frame[24] ^= 0xff;
        repair(&mut frame, Ctl(Ctl::REPAIR));
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&frame[14..]).unwrap();
        assert_eq!(usize::from(ip.total_len), frame.len() - 14);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let (udp, payload) = etherparse::UdpHeader::from_slice(rest).unwrap();
        assert_eq!(usize::from(udp.length), 8 + payload.len());
        assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
        assert!(sum_verifies(&frame[14..34]));
        assert!(transport_verifies(&ip.source, &ip.destination, UDP, rest));
    }

    #[test]
    fn repaired_ipv6_frames_verify_with_etherparse_past_extension_headers() {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(1000, 53);
        let mut frame = Vec::new();
        b.write(&mut frame, b"hello").unwrap();
        // A destination options header (8 bytes of PadN) in front of the UDP header.
        frame[14 + 6] = 60;
        frame.splice(54..54, [UDP, 0, 1, 4, 0, 0, 0, 0]);
        frame.extend_from_slice(b"+more");
        frame[54 + 8 + 7] ^= 0xff;
        repair(&mut frame, Ctl(Ctl::REPAIR));
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("IPv6")
        };
        let header = ip.header().to_header();
        assert_eq!(usize::from(header.payload_length), frame.len() - 54);
        let Some(etherparse::TransportSlice::Udp(udp)) = &sliced.transport else {
            panic!("UDP")
        };
        let udp_header = udp.to_header();
        assert_eq!(usize::from(udp_header.length), frame.len() - 62);
        assert_eq!(
            udp_header.checksum,
            udp_header
                .calc_checksum_ipv6(&header, udp.payload())
                .unwrap()
        );
        assert_eq!(upper_layer6(60, &frame[54..]), Some((UDP, 8)));
        assert!(transport_verifies(
            &header.source,
            &header.destination,
            UDP,
            &frame[62..]
        ));
    }
}
