//! Traffic patterns: which flow and which frame each next packet is.
//!
//! Flows are numbered; flow `i` comes from client address `base + i / ports` and port
//! `first_port + i % ports`, so N flows spread over as few addresses as the port range allows
//! (64512 ports per address by default: 10M flows use 156 addresses).
//!
//! - **established**: the packets of N open connections (TCP ACKs), round and round, every
//!   flow once per round in a scrambled order (a stride coprime with N), so a large table is
//!   visited the way real traffic visits it, not in memory order. Before them the flows must
//!   be opened once: [`Pattern::opening`].
//! - **new**: a SYN from a fresh client port every packet: flow numbers keep counting up (they
//!   wrap after the address range is used up, 2^32 flows by default).
//! - **udp**: datagrams over N flows, round and round (the first datagram of a flow opens it).
//!
//! Frame sizes are fixed or IMIX (7 × 64, 4 × 594, 1 × 1518 bytes on the wire, the classic
//! simple IMIX, mean 361.8 bytes), the size chosen per packet by position in a 12-packet cycle.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Serialize;

use crate::frame::{Addressing, FCS_LEN, Kind, MAX_FRAME, Template};

/// What traffic to make. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TCP ACKs on N open connections.
    Established,
    /// TCP SYNs, each from a fresh client port.
    New,
    /// UDP datagrams over N flows.
    Udp,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "established" => Ok(Mode::Established),
            "new" => Ok(Mode::New),
            "udp" => Ok(Mode::Udp),
            other => Err(format!("unknown mode '{other}' (established, new, udp)")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Established => "established",
            Mode::New => "new",
            Mode::Udp => "udp",
        })
    }
}

/// Frame sizes on the wire (FCS included, as "64-byte frames" are counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this many bytes (64 to 1518).
    Fixed(u16),
    /// The simple IMIX: 7 × 64, 4 × 594, 1 × 1518.
    Imix,
}

/// The IMIX cycle: sizes on the wire in the order sent.
pub const IMIX_CYCLE: [u16; 12] = [64, 594, 64, 1518, 64, 594, 64, 64, 594, 64, 594, 64];

impl FrameSize {
    /// The distinct wire sizes used.
    pub fn sizes(self) -> Vec<u16> {
        match self {
            FrameSize::Fixed(n) => vec![n],
            FrameSize::Imix => vec![64, 594, 1518],
        }
    }

    /// Mean wire size in bytes.
    pub fn mean(self) -> f64 {
        match self {
            FrameSize::Fixed(n) => f64::from(n),
            FrameSize::Imix => {
                IMIX_CYCLE.iter().map(|&n| f64::from(n)).sum::<f64>() / IMIX_CYCLE.len() as f64
            }
        }
    }
}

impl FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        match s.parse::<u16>() {
            Ok(n) if (64..=(MAX_FRAME + FCS_LEN) as u16).contains(&n) => Ok(FrameSize::Fixed(n)),
            _ => Err(format!("frame size '{s}': 64 to 1518, or imix")),
        }
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

/// Client addresses and ports flows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpace {
    /// First client address.
    pub base: Ipv4Addr,
    /// How many client addresses to use at most.
    pub addresses: u32,
    /// First client port.
    pub first_port: u16,
    /// Ports per address.
    pub ports: u16,
}

impl FlowSpace {
    /// Ports 1024..=65535 from addresses counting up from `base`.
    pub fn from(base: Ipv4Addr, addresses: u32) -> FlowSpace {
        FlowSpace {
            base,
            addresses: addresses.max(1),
            first_port: 1024,
            ports: u16::MAX - 1024 + 1,
        }
    }

    /// How many distinct flows the space holds.
    pub fn capacity(&self) -> u64 {
        u64::from(self.addresses) * u64::from(self.ports)
    }

    /// Client address and port of flow `i` (wrapping at the capacity).
    #[inline]
    pub fn flow(&self, i: u64) -> (Ipv4Addr, u16) {
        let i = i % self.capacity();
        let ports = u64::from(self.ports);
        let addr = u32::from(self.base).wrapping_add((i / ports) as u32);
        (Ipv4Addr::from(addr), self.first_port + (i % ports) as u16)
    }
}

/// A traffic pattern: mode, flows, sizes, and the templates to write them from.
#[derive(Debug, Clone)]
pub struct Pattern {
    mode: Mode,
    flows: u64,
    space: FlowSpace,
    /// Templates of the sending phase, in IMIX cycle order (one entry for fixed sizes).
    cycle: Vec<Template>,
    /// SYN templates that open established flows.
    opening: Template,
    /// Packets made so far.
    next: u64,
    /// The flow of the next packet (established, udp) and the stride between flows.
    position: u64,
    stride: u64,
    /// Position in the size cycle.
    size_at: usize,
}

impl Pattern {
    /// `flows` flows of `mode` (ignored for `new`, where every packet is a new flow).
    pub fn new(
        mode: Mode,
        flows: u64,
        space: FlowSpace,
        size: FrameSize,
        addressing: &Addressing,
    ) -> Pattern {
        let kind = match mode {
            Mode::Established => Kind::Ack,
            Mode::New => Kind::Syn,
            Mode::Udp => Kind::Udp,
        };
        let frame_len = |wire: u16| usize::from(wire) - FCS_LEN;
        let cycle = match size {
            FrameSize::Fixed(n) => vec![Template::new(kind, addressing, frame_len(n))],
            FrameSize::Imix => IMIX_CYCLE
                .iter()
                .map(|&n| Template::new(kind, addressing, frame_len(n)))
                .collect(),
        };
        let flows = flows.clamp(1, space.capacity());
        Pattern {
            mode,
            flows,
            space,
            cycle,
            opening: Template::new(Kind::Syn, addressing, frame_len(64)),
            next: 0,
            position: 0,
            stride: scrambling_stride(flows),
            size_at: 0,
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many flows the pattern cycles over (for `new`: the flow space's capacity).
    pub fn flows(&self) -> u64 {
        match self.mode {
            Mode::New => self.space.capacity(),
            _ => self.flows,
        }
    }

    /// The flow space.
    pub fn space(&self) -> &FlowSpace {
        &self.space
    }

    /// Whether packets carry send times (not 64-byte TCP).
    pub fn stamps(&self) -> bool {
        self.cycle.iter().any(Template::stamps)
    }

    /// For `established`: the SYNs that open flows `0..flows`, one each, written into `out`
    /// one by one via `each(frame)`. Nothing for the other modes (a UDP flow opens with its
    /// first datagram, a new flow is its SYN).
    pub fn opening(&self, out: &mut [u8], mut each: impl FnMut(&mut [u8])) {
        if self.mode != Mode::Established {
            return;
        }
        for i in 0..self.flows {
            let (src, sport) = self.space.flow(i);
            let n = self.opening.write(out, src, sport, 0);
            each(&mut out[..n]);
        }
    }

    /// Writes the next packet into `out` (at least 1514 bytes, or the largest size used) with
    /// send time `stamp_ns`; returns its length.
    #[inline]
    pub fn write_next(&mut self, out: &mut [u8], stamp_ns: u64) -> usize {
        let flow = match self.mode {
            Mode::New => self.next,
            _ => {
                let flow = self.position;
                self.position += self.stride;
                if self.position >= self.flows {
                    self.position -= self.flows;
                }
                flow
            }
        };
        self.next += 1;
        let (src, sport) = self.space.flow(flow);
        let template = &self.cycle[self.size_at];
        self.size_at += 1;
        if self.size_at == self.cycle.len() {
            self.size_at = 0;
        }
        template.write(out, src, sport, stamp_ns)
    }

    /// Packets written so far.
    pub fn written(&self) -> u64 {
        self.next
    }

    /// Restarts at the first flow (established, udp) or continues counting (new: flows
    /// stay fresh across calls).
    pub fn rewind(&mut self) {
        if self.mode != Mode::New {
            self.next = 0;
            self.position = 0;
            self.size_at = 0;
        }
    }
}

/// A stride near N/φ that is coprime with N, so `i * stride mod N` visits every flow once
/// per round, neighbours far apart.
fn scrambling_stride(flows: u64) -> u64 {
    if flows <= 2 {
        return 1;
    }
    let mut stride = ((flows as f64 * 0.618_033_988_75) as u64).max(1);
    while gcd(stride, flows) != 1 {
        stride += 1;
    }
    stride
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse;

    fn addressing() -> Addressing {
        Addressing {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: Ipv4Addr::new(192, 168, 0, 11),
            dst_port: 80,
            ipv6: None,
        }
    }

    fn space() -> FlowSpace {
        FlowSpace::from(Ipv4Addr::new(10, 0, 0, 1), 1000)
    }

    #[test]
    fn flows_fill_ports_then_addresses() {
        let s = space();
        assert_eq!(s.flow(0), (Ipv4Addr::new(10, 0, 0, 1), 1024));
        assert_eq!(s.flow(64511), (Ipv4Addr::new(10, 0, 0, 1), 65535));
        assert_eq!(s.flow(64512), (Ipv4Addr::new(10, 0, 0, 2), 1024));
        assert_eq!(s.capacity(), 64_512_000);
        assert_eq!(s.flow(s.capacity()), s.flow(0), "wraps");
    }

    #[test]
    fn established_and_udp_cycle_over_n_flows() {
        for mode in [Mode::Established, Mode::Udp] {
            let mut p = Pattern::new(mode, 3, space(), FrameSize::Fixed(64), &addressing());
            let mut out = [0u8; 1514];
            let ports: Vec<u16> = (0..7)
                .map(|_| {
                    let n = p.write_next(&mut out, 0);
                    parse(&out[..n]).unwrap().src.1
                })
                .collect();
            assert_eq!(ports, [1024, 1025, 1026, 1024, 1025, 1026, 1024], "{mode}");
        }
    }

    #[test]
    fn every_flow_comes_once_per_round_in_scrambled_order() {
        for flows in [1u64, 2, 10, 64, 1000, 4096, 10_007] {
            let mut p = Pattern::new(
                Mode::Udp,
                flows,
                space(),
                FrameSize::Fixed(64),
                &addressing(),
            );
            let mut out = [0u8; 1514];
            let mut seen = std::collections::HashSet::new();
            let mut in_order = 0;
            let mut last = None;
            for _ in 0..flows {
                let n = p.write_next(&mut out, 0);
                let src = parse(&out[..n]).unwrap().src;
                assert!(seen.insert(src), "{flows}: {src:?} twice in a round");
                if let Some((a, port)) = last {
                    in_order += usize::from(src == (a, port + 1));
                }
                last = Some(src);
            }
            assert!(
                flows < 10 || in_order < flows as usize / 10,
                "{flows}: not scrambled"
            );
        }
    }

    #[test]
    fn new_flows_never_repeat_within_the_space_and_survive_rewind() {
        let mut p = Pattern::new(Mode::New, 3, space(), FrameSize::Fixed(64), &addressing());
        let mut out = [0u8; 1514];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..70_000 {
            let n = p.write_next(&mut out, 0);
            let r = parse(&out[..n]).unwrap();
            assert!(seen.insert(r.src), "flow {:?} repeated", r.src);
            if seen.len() == 100 {
                p.rewind();
            }
        }
        assert_eq!(out[ETH_FLAGS], 0x02, "SYN");
    }
    const ETH_FLAGS: usize = 14 + 20 + 13;

    #[test]
    fn opening_sends_one_syn_per_established_flow_only() {
        let p = Pattern::new(
            Mode::Established,
            5,
            space(),
            FrameSize::Fixed(64),
            &addressing(),
        );
        let mut out = [0u8; 1514];
        let mut syns = Vec::new();
        p.opening(&mut out, |f| {
            assert_eq!(f[ETH_FLAGS], 0x02);
            syns.push(parse(f).unwrap().src.1);
        });
        assert_eq!(syns, [1024, 1025, 1026, 1027, 1028]);
        let udp = Pattern::new(Mode::Udp, 5, space(), FrameSize::Fixed(64), &addressing());
        let mut none = 0;
        udp.opening(&mut out, |_| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn imix_follows_its_cycle_and_mean() {
        let mut p = Pattern::new(Mode::Udp, 10, space(), FrameSize::Imix, &addressing());
        let mut out = [0u8; 1514];
        let sizes: Vec<u16> = (0..12)
            .map(|_| (p.write_next(&mut out, 0) + FCS_LEN) as u16)
            .collect();
        assert_eq!(sizes, IMIX_CYCLE);
        assert!((FrameSize::Imix.mean() - 361.83).abs() < 0.01);
    }

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!("imix".parse(), Ok(FrameSize::Imix));
        assert_eq!("1500".parse(), Ok(FrameSize::Fixed(1500)));
        assert!("63".parse::<FrameSize>().is_err());
        assert!("1519".parse::<FrameSize>().is_err());
        assert_eq!("new".parse(), Ok(Mode::New));
        assert!("syn".parse::<Mode>().is_err());
    }
}
