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

/// Applies the repairs `ctl` asks for to an Ethernet/IPv4 frame; other frames are left alone.
/// Lengths first, then the IPv4 header checksum, then the transport checksum (which for an
/// ICMP error covers the quoted header, repaired before it).
pub fn repair(frame: &mut [u8], ctl: Ctl) {
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
            TCP if l4.len() >= 20 => set_transport_checksum(l4, 16, src, dst, TCP),
            UDP if l4.len() >= 8 => {
                // The checksum covers the UDP length's bytes (the rest is IP padding).
                let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
                let segment = if (8..=l4.len()).contains(&len) {
                    &mut l4[..len]
                } else {
                    l4
                };
                set_transport_checksum(segment, 6, src, dst, UDP)
            }
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
            _ => {}
        }
    }
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

fn addresses(header: &[u8]) -> ([u8; 4], [u8; 4]) {
    let src = [header[12], header[13], header[14], header[15]];
    let dst = [header[16], header[17], header[18], header[19]];
    (src, dst)
}

fn set_ipv4_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let sum = Sum16BitWords::new().add_slice(header).ones_complement();
    header[10..12].copy_from_slice(&sum.to_ne_bytes());
}

fn set_transport_checksum(segment: &mut [u8], at: usize, src: [u8; 4], dst: [u8; 4], protocol: u8) {
    segment[at..at + 2].fill(0);
    let sum = pseudo_header_sum(src, dst, protocol, segment).to_ones_complement_with_no_zero();
    segment[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
}

fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_slice(&src)
        .add_slice(&dst)
        .add_2bytes([0, protocol])
        .add_2bytes((segment.len() as u16).to_be_bytes())
        .add_slice(segment)
}

/// True when the ones'-complement sum of `bytes`, checksum field included, is all ones
/// (the receiver's check: it accepts both representations of zero in the field).
pub fn sum_verifies(bytes: &[u8]) -> bool {
    Sum16BitWords::new().add_slice(bytes).ones_complement() == 0
}

/// True when a TCP or UDP segment's checksum verifies over the pseudo-header (a UDP
/// checksum of 0, "none", does not verify here: the caller decides what it means).
pub fn transport_verifies(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> bool {
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
        assert!(transport_verifies(ip.source, ip.destination, UDP, rest));
    }
}
