//! What the pipeline's output must be, checked with etherparse (never with the forwarders'
//! own parser or checksums):
//!
//! - every transmitted frame is Ethernet II with an IPv4 datagram (a valid header and
//!   header checksum, no fragment, no TTL of 0 unless received so: DR passes it on) or an
//!   IPv6 one (version 6, extension headers that parse, no fragment, no hop limit of 0
//!   unless received so), whose total length fits the frame and the egress link's MTU, no
//!   padding beyond the Ethernet minimum, and a TCP, UDP, ICMP, ICMPv6 or tunnel payload
//!   (IPIP, IPv6-in-IPv6, IPv4-in-IPv6, IPv6-in-IPv4) whose headers parse and whose
//!   checksums verify whenever the received frame's did (an ICMP or ICMPv6 checksum always:
//!   the pipeline verifies it or writes it); a tunnel's inner datagram is checked the same
//!   way;
//! - it leaves from the link's own MAC to a known neighbour, or it is an ICMP or ICMPv6
//!   error the director answers the sender with: back out of the ingress port, MACs
//!   swapped, quoting the received datagram (an ICMPv6 one from a VIP or a director
//!   address, at most 1280 bytes);
//! - every frame not transmitted is counted under a drop reason: the worker's counters
//!   moved by exactly the batch's frames, transmits and drops.

use std::net::Ipv6Addr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, Ipv6Slice, TcpHeader,
    UdpHeader,
};
use xvs_dataplane::pipeline::Verdict;
use xvs_dataplane::pipeline::counters::{Drop, WorkerCounters};
use xvs_forwarders::Reason;

use crate::lab::{self, Lab, Outcome};
use crate::repair::{ipv4_header_len, sum_verifies, transport_verifies, upper_layer6};

const ETH: usize = 14;
/// Ethernet's minimum frame without the FCS: shorter datagrams may carry padding.
const ETH_MIN_FRAME: usize = 60;
const IPV6_HEADER: usize = 40;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 error types: destination unreachable, packet too big, time exceeded, parameter
/// problem.
const ICMPV6_ERRORS: std::ops::RangeInclusive<u8> = 1..=4;
/// IPv6's minimum MTU, the most an ICMPv6 error may take (RFC 4443 2.4 c).
const IPV6_MIN_MTU: u16 = 1280;
/// The addresses the director's own ICMPv6 errors may come from: its VIPs and its links'.
const DIRECTOR6: [Ipv6Addr; 4] = [lab::VIP6, lab::VIP6_ANY_PORT, lab::DIP6, lab::INTERNAL6];

/// The links and neighbours of a [`Lab`], as the checks need them.
pub struct Oracle {
    /// `(MAC, MTU)` by port.
    links: Vec<([u8; 6], u16)>,
    /// The MACs each port may send to.
    neighbours: [Vec<[u8; 6]>; 2],
}

impl Oracle {
    /// The oracle for `lab`.
    pub fn new(lab: &Lab) -> Self {
        let links = lab.routes.links.iter().map(|l| (l.mac, l.mtu)).collect();
        let neighbours = [
            vec![
                lab::CLIENT_MAC,
                lab::GATEWAY_MAC,
                lab::server_mac(0, 0),
                lab::server_mac(0, 1),
            ],
            vec![lab::server_mac(1, 0), lab::server_mac(1, 1)],
        ];
        Oracle { links, neighbours }
    }

    /// Checks one batch: every transmitted frame, and the counters of the worker that
    /// processed it (`before` was taken just before the batch).
    pub fn check_batch(
        &self,
        ingress: u8,
        outcomes: &[Outcome],
        before: &Counters,
        counters: &WorkerCounters,
    ) {
        let after = Counters::of(counters);
        let mut transmitted = 0;
        for outcome in outcomes {
            if let Verdict::Transmit { port } = outcome.verdict {
                transmitted += 1;
                if let Err(why) = self.check_transmitted(ingress, outcome, port) {
                    panic!(
                        "{why}\nframe received on port {ingress}, sent on port {port}:\n\
                         received {:02x?}\nsent     {:02x?}",
                        outcome.input, outcome.output
                    );
                }
            }
        }
        let dropped = outcomes.len() as u64 - transmitted;
        let d = |f: fn(&Counters) -> u64| f(&after) - f(before);
        assert_eq!(
            d(|c| c.rx),
            outcomes.len() as u64,
            "rx_frames counts every frame"
        );
        assert_eq!(d(|c| c.tx), transmitted, "tx_frames counts every transmit");
        assert_eq!(
            d(|c| c.drops.iter().sum::<u64>()) + d(|c| c.local),
            dropped,
            "every frame not transmitted is counted under a drop reason (or delivered locally)"
        );
        assert_eq!(
            d(|c| c.refused.iter().sum::<u64>()),
            d(|c| c.drops[Drop::Refused as usize]),
            "every refusal has its forwarders reason"
        );
        assert!(
            d(|c| c.icmp_sent) <= transmitted,
            "ICMP replies are transmits"
        );
    }

    /// Checks one transmitted frame against the frame received; says what is wrong.
    pub fn check_transmitted(&self, ingress: u8, outcome: &Outcome, port: u8) -> Checked {
        let (input, out) = (&outcome.input[..], &outcome.output[..]);
        let Some(&(link_mac, mtu)) = self.links.get(usize::from(port)) else {
            return Err(format!("transmit on port {port}, which does not exist"));
        };
        let (eth, _) = Ethernet2Header::from_slice(out).map_err(|e| format!("Ethernet: {e}"))?;
        let reply = quotes_the_datagram_received(out, input);
        let (ip, mtu) = match eth.ether_type {
            // The director's ICMP replies are at most 576 bytes (RFC 1812 4.3.2.3), whatever
            // the ingress link's MTU: xvs does not cap them below it (a link under 576 is
            // rare; see fuzz/README.md).
            EtherType::IPV4 => {
                let mtu = if reply { mtu.max(576) } else { mtu };
                (check_ipv4(&out[ETH..], mtu)?, mtu)
            }
            // Its ICMPv6 errors are at most 1280 bytes, likewise whatever the link's MTU.
            EtherType::IPV6 => {
                let mtu = if reply { IPV6_MIN_MTU } else { mtu };
                (check_ipv6(&out[ETH..], mtu)?, mtu)
            }
            other => return Err(format!("EtherType {other:?}: IPv4 or IPv6 only")),
        };
        let padding = out.len() - ETH - ip.total_len;
        ensure!(
            padding == 0 || out.len() <= ETH_MIN_FRAME,
            "{padding} bytes after the IP datagram in a {}-byte frame",
            out.len()
        );
        let facts = Facts::of(input);
        // DR passes the TTL (hop limit) on as received; NAT and TUN decrement it only above 1.
        ensure!(
            ip.hops != 0 || facts.received_hops_zero,
            "xvs made a TTL or hop limit of 0"
        );
        if reply {
            // The director's own ICMP error, back to the sender.
            ensure!(port == ingress, "ICMP replies leave by the ingress port");
            ensure!(eth.destination[..] == input[6..12], "to the sender's MAC");
            ensure!(eth.source[..] == input[..6], "from the MAC it was sent to");
            ensure!(
                Some(ip.dst()) == source_address(input),
                "to the sender of the datagram it quotes"
            );
            if ip.is_v6() {
                let source = Ipv6Addr::from(ip.src);
                ensure!(
                    DIRECTOR6.contains(&source),
                    "an ICMPv6 error from {source}, not a VIP or director address"
                );
            }
        } else {
            ensure!(eth.source == link_mac, "from the link's MAC");
            ensure!(
                self.neighbours[usize::from(port)].contains(&eth.destination),
                "to a neighbour of port {port}"
            );
        }
        check_payload(&out[ETH..ETH + ip.total_len], &ip, &facts, mtu, 0)
    }
}

/// The IP source address of the IPv4 or IPv6 frame `frame`, if it has one.
fn source_address(frame: &[u8]) -> Option<&[u8]> {
    match frame.get(12..14)? {
        [0x08, 0x00] => frame.get(ETH + 12..ETH + 16),
        [0x86, 0xdd] => frame.get(ETH + 8..ETH + 24),
        _ => None,
    }
}

/// True when `out` is an ICMP or ICMPv6 error quoting the IP datagram of `input` from its
/// first byte: one the director wrote (a relayed or forwarded error quotes another packet).
/// The director writes no extension headers in front of its ICMPv6 errors.
fn quotes_the_datagram_received(out: &[u8], input: &[u8]) -> bool {
    let quote = if let Some(ihl) = ipv4_header_len(out) {
        let total = usize::from(u16::from_be_bytes([out[ETH + 2], out[ETH + 3]]));
        let end = (ETH + total).min(out.len());
        match out.get(ETH + ihl..end) {
            Some(icmp)
                if out[ETH + 9] == 1
                    && icmp.len() >= 8 + 20
                    && matches!(icmp[0], ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED) =>
            {
                &icmp[8..]
            }
            _ => return false,
        }
    } else if out.len() >= ETH + IPV6_HEADER && out[12..14] == [0x86, 0xdd] {
        let payload = usize::from(u16::from_be_bytes([out[ETH + 4], out[ETH + 5]]));
        let end = (ETH + IPV6_HEADER + payload).min(out.len());
        match out.get(ETH + IPV6_HEADER..end) {
            Some(icmp)
                if out[ETH + 6] == 58
                    && icmp.len() >= 8 + IPV6_HEADER
                    && ICMPV6_ERRORS.contains(&icmp[0]) =>
            {
                &icmp[8..]
            }
            _ => return false,
        }
    } else {
        return false;
    };
    input.get(ETH..ETH + quote.len()) == Some(quote)
}

/// A check's verdict: what is wrong, if anything.
pub type Checked = Result<(), String>;

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
use ensure;

/// The fields of a checked IPv4 or IPv6 header the payload checks use.
#[derive(Debug)]
struct Ip {
    /// The IPv4 header, or the IPv6 header and its extension headers.
    header_len: usize,
    total_len: usize,
    /// The upper-layer protocol (after IPv6 extension headers).
    protocol: IpNumber,
    /// The TTL or hop limit.
    hops: u8,
    /// 4 or 16: how much of `src` and `dst` is the address.
    addr_len: usize,
    src: [u8; 16],
    dst: [u8; 16],
}

impl Ip {
    fn is_v6(&self) -> bool {
        self.addr_len == 16
    }

    fn src(&self) -> &[u8] {
        &self.src[..self.addr_len]
    }

    fn dst(&self) -> &[u8] {
        &self.dst[..self.addr_len]
    }
}

/// Checks the IPv4 header at the start of `datagram` (bytes may follow it).
fn check_ipv4(datagram: &[u8], mtu: u16) -> Result<Ip, String> {
    let header = Ipv4HeaderSlice::from_slice(datagram).map_err(|e| format!("IPv4: {e}"))?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    ensure!(
        total_len >= header_len && total_len <= datagram.len(),
        "total length {total_len} for a {header_len}-byte header and {} bytes",
        datagram.len()
    );
    ensure!(
        total_len <= usize::from(mtu),
        "a {total_len}-byte datagram on a link of MTU {mtu}"
    );
    ensure!(sum_verifies(header.slice()), "IPv4 header checksum");
    ensure!(!header.is_fragmenting_payload(), "never a fragment");
    let widen = |a: [u8; 4]| {
        let mut wide = [0; 16];
        wide[..4].copy_from_slice(&a);
        wide
    };
    Ok(Ip {
        hops: header.ttl(),
        header_len,
        total_len,
        protocol: header.protocol(),
        addr_len: 4,
        src: widen(header.source()),
        dst: widen(header.destination()),
    })
}

/// Checks the IPv6 header and extension headers at the start of `datagram` (bytes may
/// follow the datagram).
fn check_ipv6(datagram: &[u8], mtu: u16) -> Result<Ip, String> {
    let header = Ipv6HeaderSlice::from_slice(datagram).map_err(|e| format!("IPv6: {e}"))?;
    let total_len = IPV6_HEADER + usize::from(header.payload_length());
    ensure!(
        total_len <= datagram.len(),
        "payload length {} in {} bytes",
        header.payload_length(),
        datagram.len() - IPV6_HEADER
    );
    ensure!(
        total_len <= usize::from(mtu),
        "a {total_len}-byte datagram on a link of MTU {mtu}"
    );
    let slice = Ipv6Slice::from_slice(&datagram[..total_len])
        .map_err(|e| format!("IPv6 extension headers: {e}"))?;
    ensure!(!slice.is_payload_fragmented(), "never a fragment");
    let payload = slice.payload();
    Ok(Ip {
        header_len: total_len - payload.payload.len(),
        total_len,
        protocol: payload.ip_number,
        hops: header.hop_limit(),
        addr_len: 16,
        src: header.source(),
        dst: header.destination(),
    })
}

/// Checks the transport header of `datagram` (exactly the IP datagram).
fn check_payload(datagram: &[u8], ip: &Ip, facts: &Facts, mtu: u16, depth: u8) -> Checked {
    let payload = &datagram[ip.header_len..];
    match ip.protocol {
        IpNumber::TCP => {
            TcpHeader::from_slice(payload).map_err(|e| format!("TCP: {e}"))?;
            if facts.l4_verified {
                ensure!(
                    transport_verifies(ip.src(), ip.dst(), 6, payload),
                    "TCP checksum"
                );
            }
        }
        IpNumber::UDP => {
            let (udp, _) = UdpHeader::from_slice(payload).map_err(|e| format!("UDP: {e}"))?;
            let len = usize::from(udp.length);
            ensure!(
                (8..=payload.len()).contains(&len),
                "UDP length {len} in {} bytes",
                payload.len()
            );
            if facts.udp_without_checksum {
                ensure!(udp.checksum == 0, "no UDP checksum stays none");
            } else if facts.l4_verified {
                ensure!(udp.checksum != 0, "a UDP checksum does not become none");
                ensure!(
                    transport_verifies(ip.src(), ip.dst(), 17, &payload[..len]),
                    "UDP checksum"
                );
            }
        }
        IpNumber::ICMP => {
            ensure!(!ip.is_v6(), "ICMP for IPv4 in an IPv6 datagram");
            ensure!(payload.len() >= 8, "an ICMP header");
            ensure!(sum_verifies(payload), "ICMP checksum");
            if facts.quotes_verified && matches!(payload[0], 3 | 11) {
                ensure!(quotes_verify(&payload[8..]), "quoted IPv4 header checksum");
            }
        }
        IpNumber::IPV6_ICMP => {
            ensure!(ip.is_v6(), "ICMPv6 in an IPv4 datagram");
            ensure!(payload.len() >= 8, "an ICMPv6 header");
            ensure!(
                transport_verifies(ip.src(), ip.dst(), 58, payload),
                "ICMPv6 checksum"
            );
            if facts.quotes_verified && ICMPV6_ERRORS.contains(&payload[0]) {
                ensure!(quotes_verify(&payload[8..]), "quoted IPv4 header checksum");
            }
        }
        IpNumber::IPV4 | IpNumber::IPV6 if depth == 0 => {
            let inner = match ip.protocol {
                IpNumber::IPV4 => check_ipv4(payload, mtu)?,
                _ => check_ipv6(payload, mtu)?,
            };
            ensure!(
                inner.total_len == payload.len(),
                "tunnel: the inner datagram fills it"
            );
            ensure!(
                inner.hops != 0 || facts.received_hops_zero,
                "xvs made an inner TTL or hop limit of 0"
            );
            check_payload(payload, &inner, facts, mtu, 1)?;
        }
        other => return Err(format!("transmitted protocol {other:?} at depth {depth}")),
    }
    Ok(())
}

/// What held in the frame received, so the output must keep it.
#[derive(Debug, Default)]
struct Facts {
    /// The TCP/UDP checksum verified, or the ICMP / ICMPv6 one.
    l4_verified: bool,
    /// A UDP datagram without a checksum (0).
    udp_without_checksum: bool,
    /// An ICMP or ICMPv6 error whose quoted IPv4 headers verified (see [`quotes_verify`]).
    quotes_verified: bool,
    /// The TTL or hop limit received was 0 (DR passes it on).
    received_hops_zero: bool,
}

impl Facts {
    fn of(frame: &[u8]) -> Facts {
        if frame.len() >= ETH + IPV6_HEADER && frame[12..14] == [0x86, 0xdd] {
            return Facts::of_ipv6(&frame[ETH..]);
        }
        let Some(ihl) = ipv4_header_len(frame) else {
            return Facts::default();
        };
        let ip = &frame[ETH..];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let received_hops_zero = ip[8] == 0;
        if total < ihl {
            return Facts {
                received_hops_zero,
                ..Facts::default()
            };
        }
        let payload = &ip[ihl..total];
        Facts {
            received_hops_zero,
            ..Facts::of_l4(&ip[12..16], &ip[16..20], ip[9], payload)
        }
    }

    /// [`Facts::of`] for the IPv6 datagram `ip` (after the Ethernet header).
    fn of_ipv6(ip: &[u8]) -> Facts {
        let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let payload = &ip[IPV6_HEADER..(IPV6_HEADER + payload_len).min(ip.len())];
        let received_hops_zero = ip[7] == 0;
        let facts = match upper_layer6(ip[6], payload) {
            Some((protocol, at)) => Facts::of_l4(&ip[8..24], &ip[24..40], protocol, &payload[at..]),
            None => Facts::default(),
        };
        Facts {
            received_hops_zero,
            ..facts
        }
    }

    /// What holds of the transport message `payload` of `protocol` between `src` and `dst`.
    fn of_l4(src: &[u8], dst: &[u8], protocol: u8, payload: &[u8]) -> Facts {
        match protocol {
            6 => Facts {
                l4_verified: transport_verifies(src, dst, 6, payload),
                ..Facts::default()
            },
            17 if payload.len() >= 8 => {
                let len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
                let zero = payload[6..8] == [0, 0];
                Facts {
                    udp_without_checksum: zero,
                    l4_verified: !zero
                        && len <= payload.len()
                        && transport_verifies(src, dst, 17, &payload[..len]),
                    ..Facts::default()
                }
            }
            1 if payload.len() >= 8 => Facts {
                l4_verified: sum_verifies(payload),
                quotes_verified: quotes_verify(&payload[8..]),
                ..Facts::default()
            },
            58 if payload.len() >= 8 => Facts {
                l4_verified: transport_verifies(src, dst, 58, payload),
                quotes_verified: quotes_verify(&payload[8..]),
                ..Facts::default()
            },
            _ => Facts::default(),
        }
    }
}

/// True when the quoted IPv4 header at the start of `quote` verifies, and so does the inner
/// one of a quoted tunnel packet (IPIP, IPv4-in-IPv6); a quoted IPv6 header has no checksum
/// of its own, and a header cut short by the quote does not verify.
fn quotes_verify(quote: &[u8]) -> bool {
    if quote.first().is_some_and(|b| b >> 4 == 6) {
        let Ok(header) = Ipv6HeaderSlice::from_slice(quote) else {
            return false;
        };
        return match upper_layer6(header.next_header().0, &quote[IPV6_HEADER..]) {
            Some((4 | 41, at)) => quotes_verify(&quote[IPV6_HEADER + at..]),
            Some(_) => true,
            None => false,
        };
    }
    let Ok(header) = Ipv4HeaderSlice::from_slice(quote) else {
        return false;
    };
    if !sum_verifies(header.slice()) {
        return false;
    }
    if matches!(header.protocol(), IpNumber::IPV4 | IpNumber::IPV6) {
        return quotes_verify(&quote[header.slice().len()..]);
    }
    true
}

/// A worker's counters at one moment.
#[derive(Debug, Clone)]
pub struct Counters {
    rx: u64,
    tx: u64,
    local: u64,
    icmp_sent: u64,
    drops: [u64; Drop::COUNT],
    refused: [u64; Reason::COUNT],
}

impl Counters {
    /// Reads `c`.
    pub fn of(c: &WorkerCounters) -> Counters {
        use std::sync::atomic::Ordering::Relaxed;
        Counters {
            rx: c.rx_frames.load(Relaxed),
            tx: c.tx_frames.load(Relaxed),
            local: c.local_delivered.load(Relaxed),
            icmp_sent: c.icmp_sent.load(Relaxed),
            drops: std::array::from_fn(|i| c.drops[i].load(Relaxed)),
            refused: std::array::from_fn(|i| c.refused[i].load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::LabConfig;
    use crate::seeds::v6::Packet6;
    use crate::seeds::{CLIENT_PORT, flags};

    /// A named change to a transmitted frame.
    type Corruption = (&'static str, fn(&mut Vec<u8>));

    /// An IPv6 SYN forwarded by each method passes; each corruption of it is caught.
    #[test]
    fn ipv6_frames_pass_and_their_corruptions_do_not() {
        let syn = Packet6::tcp(
            (lab::CLIENT6, CLIENT_PORT),
            (lab::VIP6, 80),
            flags::SYN,
            &[],
        );
        for pools in [0b0000, 0b0101, 0b1010] {
            let config = LabConfig {
                services: pools,
                ..LabConfig::default()
            };
            let mut lab = Lab::new(config, 1);
            let oracle = Oracle::new(&lab);
            let mut outcomes = lab.run_batch(0, 0, &[syn.build()]);
            let outcome = &mut outcomes[0];
            let Verdict::Transmit { port } = outcome.verdict else {
                panic!("pools {pools:04b}: {:?}", outcome.verdict)
            };
            assert_eq!(oracle.check_transmitted(0, outcome, port), Ok(()));
            let sent = outcome.output.clone();
            let corruptions: [Corruption; 5] = [
                ("hop limit 0", |f| f[ETH + 7] = 0),
                ("payload length", |f| f[ETH + 5] += 1),
                ("padding", |f| f.extend_from_slice(&[0; 64])),
                ("version", |f| f[ETH] = 0x50),
                ("last byte", |f| *f.last_mut().unwrap() ^= 1),
            ];
            for (what, corrupt) in corruptions {
                outcome.output = sent.clone();
                corrupt(&mut outcome.output);
                assert!(
                    oracle.check_transmitted(0, outcome, port).is_err(),
                    "pools {pools:04b}: {what}"
                );
            }
        }
    }
}
