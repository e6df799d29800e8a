//! Frames the generator sends: Ethernet + IPv4 + TCP or UDP, written from a template.
//!
//! A [`Template`] holds one complete frame (fixed addresses, size, TCP flags) and the one's
//! complement sums of its IPv4 header and of its L4 pseudo-header + segment *with the fields
//! that vary per packet zeroed*: the client address, the client port and the payload's
//! timestamp. Writing a packet is then a copy of the template plus a few adds per checksum,
//! exact (the receiving kernel verifies them) and cheap enough that the in-memory benchmarks
//! measure the pipeline rather than the generator.
//!
//! Payload: when there is room, the first 12 bytes are [`STAMP_MAGIC`] and a 64-bit
//! `CLOCK_MONOTONIC` time in nanoseconds (big-endian), which the receiver turns into latency.
//! The rest is zeros. A 64-byte TCP frame has 6 bytes of payload: no stamp.

use std::net::Ipv4Addr;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length (no options).
pub const IPV4_LEN: usize = 20;
/// TCP header length (no options).
pub const TCP_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// Marks a payload that carries a send time.
pub const STAMP_MAGIC: [u8; 4] = *b"XVSP";
/// Bytes of payload a stamp takes.
pub const STAMP_LEN: usize = 12;
/// Smallest Ethernet frame without its 4-byte FCS (64 bytes on the wire).
pub const MIN_FRAME: usize = 60;
/// Largest frame without FCS for a 1500-byte MTU.
pub const MAX_FRAME: usize = 1514;
/// The FCS the NIC appends, counted in on-wire sizes ("64-byte frames").
pub const FCS_LEN: usize = 4;

const IP_CSUM: usize = ETH_LEN + 10;
const IP_SRC: usize = ETH_LEN + 12;
const L4: usize = ETH_LEN + IPV4_LEN;

/// What kind of packet a template makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP SYN: opens a connection.
    Syn,
    /// TCP ACK (with payload when the size allows): a packet of an open connection.
    Ack,
    /// A UDP datagram.
    Udp,
}

impl Kind {
    fn l4_len(self) -> usize {
        match self {
            Kind::Syn | Kind::Ack => TCP_LEN,
            Kind::Udp => UDP_LEN,
        }
    }

    fn ip_protocol(self) -> u8 {
        match self {
            Kind::Syn | Kind::Ack => 6,
            Kind::Udp => 17,
        }
    }

    /// Offset of the L4 checksum in the frame.
    fn csum_offset(self) -> usize {
        L4 + match self {
            Kind::Syn | Kind::Ack => 16,
            Kind::Udp => 6,
        }
    }
}

/// Fixed header fields of every frame of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// Source MAC (the sender's interface).
    pub src_mac: [u8; 6],
    /// Destination MAC (the director's interface, or the next hop toward it).
    pub dst_mac: [u8; 6],
    /// Destination address (the VIP).
    pub dst: Ipv4Addr,
    /// Destination port (the virtual service's).
    pub dst_port: u16,
}

/// One frame shape, ready to be stamped out per packet. See the module documentation.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    kind: Kind,
    /// Sum of the IPv4 header with source address and checksum zeroed.
    ip_sum: u32,
    /// Sum of pseudo-header + L4 header + payload with source address, source port,
    /// checksum and stamp zeroed.
    l4_sum: u32,
    stamp_at: Option<usize>,
}

impl Template {
    /// A `frame_len`-byte frame (without FCS; at least [`MIN_FRAME`], at most [`MAX_FRAME`])
    /// of `kind`. Source address and port are filled per packet.
    pub fn new(kind: Kind, addressing: &Addressing, frame_len: usize) -> Template {
        let frame_len = frame_len.clamp(MIN_FRAME, MAX_FRAME);
        let mut b = vec![0u8; frame_len];
        b[0..6].copy_from_slice(&addressing.dst_mac);
        b[6..12].copy_from_slice(&addressing.src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_total = (frame_len - ETH_LEN) as u16;
        let ip = &mut b[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
        ip[4..6].copy_from_slice(&1u16.to_be_bytes()); // identification
        ip[6] = 0x40; // DF, as Linux sends TCP and most UDP
        ip[8] = 64; // TTL
        ip[9] = kind.ip_protocol();
        ip[16..20].copy_from_slice(&addressing.dst.octets());
        let l4_len = frame_len - L4;
        let l4 = &mut b[L4..];
        l4[2..4].copy_from_slice(&addressing.dst_port.to_be_bytes());
        match kind {
            Kind::Syn | Kind::Ack => {
                l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence
                l4[12] = 5 << 4; // data offset: 5 words
                if kind == Kind::Syn {
                    l4[13] = 0x02;
                } else {
                    l4[8..12].copy_from_slice(&1u32.to_be_bytes()); // acknowledgement
                    l4[13] = 0x10;
                }
                l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
            }
            Kind::Udp => l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
        }
        let payload_at = L4 + kind.l4_len();
        let stamp_at = (frame_len - payload_at >= STAMP_LEN).then_some(payload_at);
        if let Some(at) = stamp_at {
            b[at..at + 4].copy_from_slice(&STAMP_MAGIC);
        }
        let ip_sum = sum_words(&b[ETH_LEN..ETH_LEN + IPV4_LEN], 0);
        // Pseudo-header without the source address: destination, protocol, L4 length.
        let pseudo =
            sum_words(&addressing.dst.octets(), 0) + u32::from(kind.ip_protocol()) + l4_len as u32;
        let l4_sum = sum_words(&b[L4..], pseudo);
        Template {
            bytes: b,
            kind,
            ip_sum,
            l4_sum,
            stamp_at,
        }
    }

    /// The frame length (without FCS).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a template is at least [`MIN_FRAME`] bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The kind of packet.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether frames of this template carry a timestamp.
    pub fn stamps(&self) -> bool {
        self.stamp_at.is_some()
    }

    /// Writes the frame from `src:sport` into `out` (at least [`Template::len`] bytes) with
    /// send time `stamp_ns` (ignored without room for it); returns the frame length.
    #[inline]
    pub fn write(&self, out: &mut [u8], src: Ipv4Addr, sport: u16, stamp_ns: u64) -> usize {
        let n = self.bytes.len();
        let out = &mut out[..n];
        out.copy_from_slice(&self.bytes);
        let src_bits = u32::from(src);
        let addr_sum = (src_bits >> 16) + (src_bits & 0xffff);
        out[IP_SRC..IP_SRC + 4].copy_from_slice(&src.octets());
        out[IP_CSUM..IP_CSUM + 2].copy_from_slice(&fold(self.ip_sum + addr_sum).to_be_bytes());
        out[L4..L4 + 2].copy_from_slice(&sport.to_be_bytes());
        let mut l4_sum = self.l4_sum + addr_sum + u32::from(sport);
        if let Some(at) = self.stamp_at {
            out[at + 4..at + 12].copy_from_slice(&stamp_ns.to_be_bytes());
            l4_sum += (stamp_ns >> 48) as u32
                + ((stamp_ns >> 32) & 0xffff) as u32
                + ((stamp_ns >> 16) & 0xffff) as u32
                + (stamp_ns & 0xffff) as u32;
        }
        let mut csum = fold(l4_sum);
        if self.kind == Kind::Udp && csum == 0 {
            csum = 0xffff; // 0 means "no checksum" in UDP
        }
        let at = self.kind.csum_offset();
        out[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        n
    }
}

/// One's complement sum of big-endian 16-bit words (an odd last byte padded with zero),
/// added to `initial`, not folded.
pub fn sum_words(bytes: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits and complements it: the Internet checksum.
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a receiver reads back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// IP protocol (6 or 17).
    pub protocol: u8,
    /// The send time carried in the payload, if any.
    pub stamp_ns: Option<u64>,
}

/// Reads a TCP or UDP over IPv4 frame (also one that arrives IPIP-encapsulated, as TUN
/// sends it); `None` for anything else.
pub fn parse(frame: &[u8]) -> Option<Received> {
    if frame.len() < ETH_LEN + IPV4_LEN || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let mut ip_at = ETH_LEN;
    loop {
        let ip = frame.get(ip_at..ip_at + IPV4_LEN)?;
        if ip[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let end = (ip_at + total).min(frame.len());
        let protocol = ip[9];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = ip_at + ihl;
        let payload_at = match protocol {
            4 => {
                ip_at = l4;
                continue;
            }
            6 => l4 + usize::from(frame.get(l4 + 12)? >> 4) * 4,
            17 => l4 + UDP_LEN,
            _ => return None,
        };
        let ports = frame.get(l4..l4 + 4)?;
        let payload = frame.get(payload_at.min(end)..end).unwrap_or(&[]);
        let stamp_ns = (payload.len() >= STAMP_LEN && payload[..4] == STAMP_MAGIC)
            .then(|| u64::from_be_bytes(payload[4..12].try_into().unwrap_or([0; 8])));
        return Some(Received {
            src: (src, u16::from_be_bytes([ports[0], ports[1]])),
            dst: (dst, u16::from_be_bytes([ports[2], ports[3]])),
            protocol,
            stamp_ns,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn addressing() -> Addressing {
        Addressing {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: Ipv4Addr::new(192, 168, 0, 11),
            dst_port: 80,
        }
    }

    /// Recomputes every checksum of `frame` from scratch with etherparse.
    fn assert_checksums(frame: &[u8]) {
        let sliced = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4")
        };
        let header = ip.header().to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "IPv4"
        );
        let payload = ip.payload().payload;
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let h = tcp.to_header();
                let want = h.calc_checksum_ipv4(&header, tcp.payload()).unwrap();
                assert_eq!(h.checksum, want, "TCP");
            }
            Some(TransportSlice::Udp(udp)) => {
                let h = udp.to_header();
                let want = h.calc_checksum_ipv4(&header, &payload[UDP_LEN..]).unwrap();
                assert_eq!(h.checksum, want, "UDP");
            }
            other => panic!("no transport: {other:?}"),
        }
    }

    #[test]
    fn every_kind_and_size_has_correct_checksums_for_any_source() {
        let mut out = [0u8; MAX_FRAME];
        for kind in [Kind::Syn, Kind::Ack, Kind::Udp] {
            for len in [MIN_FRAME, 64, 590, 1000, MAX_FRAME] {
                let t = Template::new(kind, &addressing(), len);
                for (i, src) in [
                    Ipv4Addr::new(10, 0, 0, 1),
                    Ipv4Addr::new(255, 255, 255, 254),
                    Ipv4Addr::new(192, 168, 0, 100),
                ]
                .into_iter()
                .enumerate()
                {
                    let sport = [1024, 65535, 40000][i];
                    let stamp = [0, u64::MAX, 0x0123_4567_89ab_cdef][i];
                    let n = t.write(&mut out, src, sport, stamp);
                    assert_eq!(n, len);
                    assert_checksums(&out[..n]);
                }
            }
        }
    }

    #[test]
    fn the_frame_says_what_was_asked() {
        let mut out = [0u8; MAX_FRAME];
        let t = Template::new(Kind::Syn, &addressing(), 100);
        let n = t.write(&mut out, Ipv4Addr::new(10, 1, 2, 3), 5555, 42);
        let sliced = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("TCP")
        };
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (5555, 80));
        let got = parse(&out[..n]).unwrap();
        assert_eq!(got.src, (Ipv4Addr::new(10, 1, 2, 3), 5555));
        assert_eq!(got.dst, (Ipv4Addr::new(192, 168, 0, 11), 80));
        assert_eq!(got.stamp_ns, Some(42));
        let ack = Template::new(Kind::Ack, &addressing(), MIN_FRAME);
        assert!(!ack.stamps(), "6 bytes of payload: no room for a stamp");
        let mut small = [0u8; MIN_FRAME];
        let n = ack.write(&mut small, Ipv4Addr::new(10, 1, 2, 3), 5555, 42);
        assert_eq!(parse(&small[..n]).unwrap().stamp_ns, None);
    }

    #[test]
    fn sizes_are_clamped_to_ethernet() {
        assert_eq!(Template::new(Kind::Udp, &addressing(), 10).len(), MIN_FRAME);
        assert_eq!(
            Template::new(Kind::Udp, &addressing(), 9000).len(),
            MAX_FRAME
        );
    }

    #[test]
    fn parse_sees_through_ipip() {
        let mut inner = [0u8; 200];
        let t = Template::new(Kind::Udp, &addressing(), 100);
        let n = t.write(&mut inner, Ipv4Addr::new(10, 0, 0, 9), 999, 7);
        let mut outer = inner[..ETH_LEN].to_vec();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((n - ETH_LEN + 20) as u16).to_be_bytes());
        ip[9] = 4;
        outer.extend_from_slice(&ip);
        outer.extend_from_slice(&inner[ETH_LEN..n]);
        let got = parse(&outer).unwrap();
        assert_eq!(got.src, (Ipv4Addr::new(10, 0, 0, 9), 999));
        assert_eq!((got.protocol, got.stamp_ns), (17, Some(7)));
        assert_eq!(parse(&outer[..20]), None);
    }
}
