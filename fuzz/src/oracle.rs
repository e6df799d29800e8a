//! What the pipeline's output must be, checked with etherparse (never with the forwarders'
//! own parser or checksums):
//!
//! - every transmitted frame is Ethernet II / IPv4 with a valid header and header checksum,
//!   a total length that fits the frame and the egress link's MTU, no padding beyond the
//!   Ethernet minimum, no fragment, and a TCP, UDP, ICMP or IPIP payload whose headers parse
//!   and whose checksums verify whenever the received frame's did (an ICMP checksum always:
//!   the pipeline verifies it or writes it); an IPIP packet's inner datagram is checked the
//!   same way;
//! - it leaves from the link's own MAC to a known neighbour, or it is an ICMP error the
//!   director answers the sender with: back out of the ingress port, MACs swapped, quoting
//!   the received datagram;
//! - every frame not transmitted is counted under a drop reason: the worker's counters
//!   moved by exactly the batch's frames, transmits and drops.

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4HeaderSlice, TcpHeader, UdpHeader};
use xvs_dataplane::pipeline::Verdict;
use xvs_dataplane::pipeline::counters::{Drop, WorkerCounters};
use xvs_forwarders::Reason;

use crate::lab::{self, Lab, Outcome};
use crate::repair::{ipv4_header_len, sum_verifies, transport_verifies};

const ETH: usize = 14;
/// Ethernet's minimum frame without the FCS: shorter datagrams may carry padding.
const ETH_MIN_FRAME: usize = 60;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

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
                self.check_transmitted(ingress, outcome, port);
            }
        }
        let dropped = outcomes.len() as u64 - transmitted;
        let d = |f: fn(&Counters) -> u64| f(&after) - f(before);
        assert_eq!(d(|c| c.rx), outcomes.len() as u64, "rx_frames counts every frame");
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
        assert!(d(|c| c.icmp_sent) <= transmitted, "ICMP replies are transmits");
    }

    /// Checks one transmitted frame against the frame received.
    pub fn check_transmitted(&self, ingress: u8, outcome: &Outcome, port: u8) {
        let (input, out) = (&outcome.input[..], &outcome.output[..]);
        let (link_mac, mtu) = *self
            .links
            .get(usize::from(port))
            .unwrap_or_else(|| panic!("transmit on port {port}, which does not exist"));
        let (eth, _) = Ethernet2Header::from_slice(out).expect("an Ethernet header");
        assert_eq!(eth.ether_type, EtherType::IPV4, "IPv4 only");
        let forwarded =
            eth.source == link_mac && self.neighbours[usize::from(port)].contains(&eth.destination);
        let ip = check_ipv4(&out[ETH..], mtu);
        let padding = out.len() - ETH - ip.total_len;
        assert!(
            padding == 0 || out.len() <= ETH_MIN_FRAME,
            "{padding} bytes after the IP datagram in a {}-byte frame",
            out.len()
        );
        let facts = Facts::of(input);
        if !forwarded {
            // The director's own ICMP error, back to the sender.
            assert_eq!(port, ingress, "ICMP replies leave by the ingress port");
            assert_eq!(eth.destination[..], input[6..12], "to the sender's MAC");
            assert_eq!(eth.source[..], input[..6], "from the MAC it was sent to");
            assert_eq!(ip.protocol, IpNumber::ICMP, "only ICMP errors go back: {ip:?}");
            let icmp = &out[ETH + ip.header_len..ETH + ip.total_len];
            assert!(
                matches!(icmp[0], ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED),
                "ICMP type {}",
                icmp[0]
            );
            let quote = &icmp[8..];
            let received = &input[ETH..];
            assert!(
                quote.len() <= received.len() && quote == &received[..quote.len()],
                "the reply quotes the datagram received"
            );
        }
        check_payload(&out[ETH..ETH + ip.total_len], &ip, &facts, mtu, 0);
    }
}

/// The fields of a checked IPv4 header the payload checks use.
#[derive(Debug)]
struct Ip {
    header_len: usize,
    total_len: usize,
    protocol: IpNumber,
    src: [u8; 4],
    dst: [u8; 4],
}

/// Checks the IPv4 header at the start of `datagram` (bytes may follow it).
fn check_ipv4(datagram: &[u8], mtu: u16) -> Ip {
    let header = Ipv4HeaderSlice::from_slice(datagram).expect("a valid IPv4 header");
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    assert!(
        total_len >= header_len && total_len <= datagram.len(),
        "total length {total_len} for a {header_len}-byte header and {} bytes",
        datagram.len()
    );
    assert!(
        total_len <= usize::from(mtu),
        "a {total_len}-byte datagram on a link of MTU {mtu}"
    );
    assert!(sum_verifies(header.slice()), "IPv4 header checksum");
    assert!(!header.is_fragmenting_payload(), "never a fragment");
    assert_ne!(header.ttl(), 0, "never TTL 0");
    Ip {
        header_len,
        total_len,
        protocol: header.protocol(),
        src: header.source(),
        dst: header.destination(),
    }
}

/// Checks the transport header of `datagram` (exactly the IP datagram).
fn check_payload(datagram: &[u8], ip: &Ip, facts: &Facts, mtu: u16, depth: u8) {
    let payload = &datagram[ip.header_len..];
    match ip.protocol {
        IpNumber::TCP => {
            TcpHeader::from_slice(payload).expect("a valid TCP header");
            if facts.l4_verified {
                assert!(
                    transport_verifies(ip.src, ip.dst, 6, payload),
                    "TCP checksum"
                );
            }
        }
        IpNumber::UDP => {
            let (udp, _) = UdpHeader::from_slice(payload).expect("a UDP header");
            let len = usize::from(udp.length);
            assert!(
                (8..=payload.len()).contains(&len),
                "UDP length {len} in {} bytes",
                payload.len()
            );
            if facts.udp_without_checksum {
                assert_eq!(udp.checksum, 0, "no UDP checksum stays none");
            } else if facts.l4_verified {
                assert_ne!(udp.checksum, 0, "a UDP checksum does not become none");
                assert!(
                    transport_verifies(ip.src, ip.dst, 17, &payload[..len]),
                    "UDP checksum"
                );
            }
        }
        IpNumber::ICMP => {
            assert!(payload.len() >= 8, "an ICMP header");
            assert!(sum_verifies(payload), "ICMP checksum");
            if facts.quotes_verified && matches!(payload[0], 3 | 11) {
                assert!(quotes_verify(&payload[8..]), "quoted IPv4 header checksum");
            }
        }
        IpNumber::IPV4 if depth == 0 => {
            let inner = check_ipv4(payload, mtu);
            assert_eq!(inner.total_len, payload.len(), "IPIP: the inner datagram fills it");
            check_payload(payload, &inner, facts, mtu, 1);
        }
        other => panic!("transmitted protocol {other:?} at depth {depth}"),
    }
}

/// What held in the frame received, so the output must keep it.
#[derive(Debug, Default)]
struct Facts {
    /// The TCP/UDP checksum verified, or the ICMP one.
    l4_verified: bool,
    /// A UDP datagram without a checksum (0).
    udp_without_checksum: bool,
    /// An ICMP error whose quoted IPv4 header (and an IPIP quote's inner one) verified.
    quotes_verified: bool,
}

impl Facts {
    fn of(frame: &[u8]) -> Facts {
        let Some(ihl) = ipv4_header_len(frame) else {
            return Facts::default();
        };
        let ip = &frame[ETH..];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if total < ihl {
            return Facts::default();
        }
        let payload = &ip[ihl..total];
        let src = [ip[12], ip[13], ip[14], ip[15]];
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        match ip[9] {
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
            _ => Facts::default(),
        }
    }
}

/// True when the quoted IPv4 header at the start of `quote` verifies, and so does the inner
/// one of a quoted IPIP packet (a header cut short by the quote does not verify).
fn quotes_verify(quote: &[u8]) -> bool {
    let Ok(header) = Ipv4HeaderSlice::from_slice(quote) else {
        return false;
    };
    if !sum_verifies(header.slice()) {
        return false;
    }
    if header.protocol() == IpNumber::IPV4 {
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
