//! What the pipeline's output must be, checked with etherparse (never with the forwarders'
//! own parser or checksums):
//!
//! - every transmitted frame is Ethernet II / IPv4 with a valid header and header checksum,
//!   a total length that fits the frame and the egress link's MTU, no padding beyond the
//!   Ethernet minimum, no fragment, no TTL of 0 unless received so (DR), and a TCP, UDP,
//!   ICMP or IPIP payload whose headers parse and whose checksums verify whenever the
//!   received frame's did (an ICMP checksum always: the pipeline verifies it or writes it);
//!   an IPIP packet's inner datagram is checked the same way;
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
        ensure!(eth.ether_type == EtherType::IPV4, "IPv4 only");
        let reply = quotes_the_datagram_received(out, input);
        // The director's ICMP replies are at most 576 bytes (RFC 1812 4.3.2.3), whatever the
        // ingress link's MTU: xvs does not cap them below it (a link under 576 is rare; see
        // fuzz/README.md).
        let mtu = if reply { mtu.max(576) } else { mtu };
        let ip = check_ipv4(&out[ETH..], mtu)?;
        let padding = out.len() - ETH - ip.total_len;
        ensure!(
            padding == 0 || out.len() <= ETH_MIN_FRAME,
            "{padding} bytes after the IP datagram in a {}-byte frame",
            out.len()
        );
        // DR passes the TTL on as received; NAT and TUN decrement it only above 1.
        ensure!(
            ip.ttl != 0 || input.get(ETH + 8) == Some(&0),
            "xvs made a TTL 0"
        );
        if reply {
            // The director's own ICMP error, back to the sender.
            ensure!(port == ingress, "ICMP replies leave by the ingress port");
            ensure!(eth.destination[..] == input[6..12], "to the sender's MAC");
            ensure!(eth.source[..] == input[..6], "from the MAC it was sent to");
        } else {
            ensure!(eth.source == link_mac, "from the link's MAC");
            ensure!(
                self.neighbours[usize::from(port)].contains(&eth.destination),
                "to a neighbour of port {port}"
            );
        }
        let facts = Facts::of(input);
        check_payload(&out[ETH..ETH + ip.total_len], &ip, &facts, mtu, 0)
    }
}

/// True when `out` is an ICMP error quoting the IP datagram of `input` from its first byte:
/// one the director wrote (a relayed or forwarded error quotes another packet).
fn quotes_the_datagram_received(out: &[u8], input: &[u8]) -> bool {
    let Some(ihl) = ipv4_header_len(out) else {
        return false;
    };
    let total = usize::from(u16::from_be_bytes([out[ETH + 2], out[ETH + 3]]));
    let end = (ETH + total).min(out.len());
    let Some(icmp) = out.get(ETH + ihl..end) else {
        return false;
    };
    if out[ETH + 9] != 1
        || icmp.len() < 8 + 20
        || !matches!(icmp[0], ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED)
    {
        return false;
    }
    let quote = &icmp[8..];
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

/// The fields of a checked IPv4 header the payload checks use.
#[derive(Debug)]
struct Ip {
    header_len: usize,
    total_len: usize,
    protocol: IpNumber,
    ttl: u8,
    src: [u8; 4],
    dst: [u8; 4],
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
    Ok(Ip {
        ttl: header.ttl(),
        header_len,
        total_len,
        protocol: header.protocol(),
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
                    transport_verifies(ip.src, ip.dst, 6, payload),
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
                    transport_verifies(ip.src, ip.dst, 17, &payload[..len]),
                    "UDP checksum"
                );
            }
        }
        IpNumber::ICMP => {
            ensure!(payload.len() >= 8, "an ICMP header");
            ensure!(sum_verifies(payload), "ICMP checksum");
            if facts.quotes_verified && matches!(payload[0], 3 | 11) {
                ensure!(quotes_verify(&payload[8..]), "quoted IPv4 header checksum");
            }
        }
        IpNumber::IPV4 if depth == 0 => {
            let inner = check_ipv4(payload, mtu)?;
            ensure!(
                inner.total_len == payload.len(),
                "IPIP: the inner datagram fills it"
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
