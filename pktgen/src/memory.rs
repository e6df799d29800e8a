//! The generator without sockets: the same patterns fed straight into xvs's pipeline.
//!
//! [`Director`] builds what the daemon builds for one virtual service (VIP:80, two real
//! servers, round robin, DR, NAT or TUN): a service [`Snapshot`](xvs_dataplane::service),
//! routes, resolved neighbours, a connection table with one shard per worker and one
//! [`Pipeline`] per worker. A [`MemoryWorker`] then writes each packet of a [`Pattern`] into
//! one reusable frame buffer (as the NIC writes into a UMEM chunk) and calls
//! [`Pipeline::process`] on it: no sockets, no rings, no allocation per packet, so criterion
//! and callgrind see the pipeline's own cost plus a template copy.
//!
//! Time stands still unless [`Director::advance`] moves it: connections never expire during
//! a measurement; advancing past a timeout and running housekeeping is how the new-flow
//! benchmarks empty the table again between runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use xvs_conntrack::{Config, ConnTable, Secs};
use xvs_dataplane::pipeline::counters::WorkerCounters;
use xvs_dataplane::pipeline::{Clock, Pipeline, ResolveQueue, Shared, Verdict};
use xvs_dataplane::route::{Link, Neighbours, Routes};
use xvs_dataplane::service::snapshot::SnapshotBuilder;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_forwarders::Frame;

use crate::frame::{Addressing, Ipv6Addressing, MAX_FRAME};
use crate::pattern::Pattern;

/// Headroom in front of each frame, as the UMEM gives (TUN prepends its outer header there).
pub const HEADROOM: usize = 256;
/// The director's MAC (external interface).
pub const DIRECTOR_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
/// The director's internal interface MAC (NAT).
pub const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
/// The real servers' MACs.
pub const REAL_SERVER_MACS: [[u8; 6]; 2] = [[2, 5, 0, 0, 0, 11], [2, 5, 0, 0, 0, 12]];
/// The virtual service's address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 100);
/// The virtual service's port.
pub const VIP_PORT: u16 = 80;
/// The director's own address (the tunnels' source).
pub const DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
/// Where client addresses of worker `w` start: `CLIENT_BASE + w * 2^16` (flows of different
/// workers never collide, as RSS keeps a flow on one queue).
pub const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
/// The IPv6 virtual service's address ([`Director::new_ipv6`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// The director's own IPv6 address (the IPv6 tunnels' source).
pub const DIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xa);
/// The IPv6 clients' network: the flow space's IPv4 address is a client's low 32 bits.
pub const CLIENT_NET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0);

/// LVS's forwarding methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Direct routing.
    Dr,
    /// NAT (two-arm: real servers on an internal network).
    Nat,
    /// IPIP tunnel.
    Tun,
}

impl Method {
    /// Lower-case name, as benchmarks label it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dr => "dr",
            Method::Nat => "nat",
            Method::Tun => "tun",
        }
    }

    fn forward_method(self) -> ForwardMethod {
        match self {
            Method::Dr => ForwardMethod::Route,
            Method::Nat => ForwardMethod::Masq,
            Method::Tun => ForwardMethod::Tunnel,
        }
    }

    /// Address of real server `i` (0 or 1).
    pub fn real_server(self, i: usize) -> Ipv4Addr {
        match self {
            Method::Nat => Ipv4Addr::new(10, 0, 0, 11 + i as u8),
            _ => Ipv4Addr::new(192, 168, 0, 11 + i as u8),
        }
    }

    /// IPv6 address of real server `i` (0 or 1): 2001:db8::11 on the LAN, fd00::11 behind NAT.
    pub fn real_server6(self, i: usize) -> Ipv6Addr {
        let last = 0x11 + i as u16;
        match self {
            Method::Nat => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last),
            _ => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last),
        }
    }

    /// The port real servers listen on (NAT maps 80 to 8080, as the seed does).
    pub fn real_port(self) -> u16 {
        match self {
            Method::Nat => 8080,
            _ => VIP_PORT,
        }
    }

    /// The egress port (interface index) frames to real servers leave on.
    pub fn egress_port(self) -> u8 {
        match self {
            Method::Nat => 1,
            _ => 0,
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dr" => Ok(Method::Dr),
            "nat" => Ok(Method::Nat),
            "tun" => Ok(Method::Tun),
            other => Err(format!("unknown method '{other}' (dr, nat, tun)")),
        }
    }
}

/// A director in memory: one service, one pipeline per worker. See the module documentation.
pub struct Director {
    method: Method,
    ipv6: bool,
    table: ConnTable,
    workers: Vec<MemoryWorker>,
    clock: Clock,
}

impl Director {
    /// A director forwarding VIP:80 (TCP and UDP) with `method` to two real servers, `workers`
    /// pipelines over a connection table of `max_entries` entries in all.
    pub fn new(method: Method, workers: usize, max_entries: usize) -> Director {
        Director::build(method, workers, max_entries, false)
    }

    /// The same director serving `[VIP6]:80` (TCP and UDP) to two IPv6 real servers.
    pub fn new_ipv6(method: Method, workers: usize, max_entries: usize) -> Director {
        Director::build(method, workers, max_entries, true)
    }

    fn build(method: Method, workers: usize, max_entries: usize, ipv6: bool) -> Director {
        let workers = workers.max(1);
        let vip = if ipv6 {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP)
        };
        let real_server = |i| {
            if ipv6 {
                IpAddr::V6(method.real_server6(i))
            } else {
                IpAddr::V4(method.real_server(i))
            }
        };
        let mut table_spec = ServiceTableSpec::default();
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let addr = ServiceAddr::Inet {
                protocol,
                addr: vip,
                port: VIP_PORT,
            };
            let mut service = ServiceSpec::new(addr);
            service.scheduler = "rr".to_string();
            table_spec
                .add_service(service)
                .expect("a fresh table takes the service");
            for i in 0..2 {
                let dest = DestSpec {
                    addr: real_server(i),
                    port: method.real_port(),
                    method: method.forward_method(),
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                };
                table_spec
                    .add_dest(&addr, dest)
                    .expect("the service exists and the server is new");
            }
        }
        let snapshot = Arc::new(
            SnapshotBuilder::new()
                .build(&table_spec)
                .expect("two real servers compile"),
        );
        let routes = Arc::new(routes(method));
        let mut neighbours = Neighbours::new();
        for (i, mac) in REAL_SERVER_MACS.iter().enumerate() {
            neighbours.insert(method.egress_port(), method.real_server(i), *mac);
            neighbours.insert6(method.egress_port(), method.real_server6(i), *mac);
        }
        let neighbours = Arc::new(neighbours);
        let mut config = Config::new(workers, max_entries);
        config.seed = Some(0x5eed);
        let (table, shards) = ConnTable::new(config);
        let clock = Clock {
            secs: 100,
            millis: 100_000,
        };
        let workers = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| {
                let counters = Arc::new(WorkerCounters::default());
                let shared = Shared {
                    snapshot: snapshot.clone(),
                    routes: routes.clone(),
                    neighbours: neighbours.clone(),
                    counters: counters.clone(),
                    resolve: Arc::new(ResolveQueue::new(64)),
                    tunnel_source: Some(DIP),
                    tunnel_source6: Some(DIP6),
                    sync: Default::default(),
                    local: Default::default(),
                };
                let mut pipeline = Pipeline::new(i as u16, shard, shared);
                pipeline.set_clock(clock);
                MemoryWorker {
                    index: i,
                    pipeline,
                    counters,
                    buf: vec![0; HEADROOM + MAX_FRAME + 64],
                    batch: (0..SEND_BATCH)
                        .map(|_| vec![0; HEADROOM + MAX_FRAME + 64])
                        .collect(),
                    last_len: 0,
                    last_start: HEADROOM,
                }
            })
            .collect();
        Director {
            method,
            ipv6,
            table,
            workers,
            clock,
        }
    }

    /// The forwarding method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Header fields clients use to reach the VIP.
    pub fn addressing(&self) -> Addressing {
        Addressing {
            src_mac: [2, 0xc, 0, 0, 0, 1],
            dst_mac: DIRECTOR_MAC,
            dst: VIP,
            dst_port: VIP_PORT,
            ipv6: self.ipv6.then_some(Ipv6Addressing {
                dst: VIP6,
                client_net: CLIENT_NET6,
            }),
        }
    }

    /// Client addresses of worker `w`'s flows start here.
    pub fn client_base(w: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(CLIENT_BASE) + ((w as u32) << 16))
    }

    /// The workers.
    pub fn workers(&mut self) -> &mut [MemoryWorker] {
        &mut self.workers
    }

    /// Worker 0.
    pub fn worker(&mut self) -> &mut MemoryWorker {
        &mut self.workers[0]
    }

    /// Connections and templates in the table.
    pub fn connections(&self) -> u64 {
        self.table.stats().conns
    }

    /// Moves time forward by `secs` and expires what became due, in every worker.
    pub fn advance(&mut self, secs: Secs) {
        self.clock.secs += secs;
        self.clock.millis += u64::from(secs) * 1000;
        for w in &mut self.workers {
            w.pipeline.set_clock(self.clock);
            w.pipeline.housekeeping();
        }
    }

    /// The current time (seconds), as connection timers see it.
    pub fn now(&self) -> Secs {
        self.clock.secs
    }
}

/// The director's links: one LAN (DR, TUN) or external + internal (NAT).
fn routes(method: Method) -> Routes {
    let external = Link {
        port: 0,
        name: "ext".into(),
        mac: DIRECTOR_MAC,
        mtu: 1500,
        nets: vec![(DIP, 24)],
        gateway: Some(Ipv4Addr::new(192, 168, 0, 1)),
        nets6: vec![(DIP6, 64)],
        gateway6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    };
    let mut links = vec![external];
    if method == Method::Nat {
        links.push(Link {
            port: 1,
            name: "int".into(),
            mac: INTERNAL_MAC,
            mtu: 1500,
            nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
            gateway: None,
            nets6: vec![(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 64)],
            gateway6: None,
        });
    }
    Routes { links }
}

/// How many packets a run forwarded and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Packets the pipeline sent on.
    pub forwarded: u64,
    /// Packets it dropped.
    pub dropped: u64,
}

impl Tally {
    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Transmit { .. } => self.forwarded += 1,
            Verdict::Drop => self.dropped += 1,
        }
    }
}

/// One worker's pipeline and its frame buffer.
pub struct MemoryWorker {
    index: usize,
    pipeline: Pipeline,
    counters: Arc<WorkerCounters>,
    buf: Vec<u8>,
    /// One buffer per frame of a batch ([`MemoryWorker::send`]), as an RX ring's UMEM chunks.
    batch: Vec<Vec<u8>>,
    last_start: usize,
    last_len: usize,
}

/// Frames [`MemoryWorker::send`] hands the pipeline at once, as a worker's RX batch.
pub const SEND_BATCH: usize = 32;

impl MemoryWorker {
    /// This worker's index (its shard).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its counters (drops by reason, per real server packets).
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// Its pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Opens the pattern's flows (established: one SYN each) and runs one pass of their
    /// packets, so they are ESTABLISHED; what was forwarded and dropped.
    pub fn open(&mut self, pattern: &mut Pattern) -> Tally {
        let mut tally = Tally::default();
        let mut syn = [0u8; MAX_FRAME];
        let (pipeline, buf) = (&mut self.pipeline, &mut self.buf);
        pattern.opening(&mut syn, |frame| {
            tally.count(process_copy(pipeline, buf, frame).0);
        });
        if pattern.mode() != crate::pattern::Mode::New {
            let flows = pattern.flows();
            pattern.rewind();
            let pass = self.send(pattern, flows);
            tally.forwarded += pass.forwarded;
            tally.dropped += pass.dropped;
            pattern.rewind();
        }
        tally
    }

    /// Feeds the next `packets` packets of `pattern` to the pipeline, [`SEND_BATCH`] at a
    /// time, as a worker hands it an RX batch.
    #[inline]
    pub fn send(&mut self, pattern: &mut Pattern, packets: u64) -> Tally {
        let mut tally = Tally::default();
        let mut left = packets;
        let mut verdicts = [Verdict::Drop; SEND_BATCH];
        while left > 0 {
            let n = left.min(SEND_BATCH as u64) as usize;
            let mut frames: arrayvec::ArrayVec<Frame<'_>, SEND_BATCH> = arrayvec::ArrayVec::new();
            for buf in self.batch.iter_mut().take(n) {
                let len = pattern.write_next(&mut buf[HEADROOM..], 0);
                frames.push(Frame::new(buf, HEADROOM, len).expect("the buffer holds any frame"));
            }
            self.pipeline
                .process_batch(&mut frames, 0, &mut verdicts[..n]);
            for verdict in &verdicts[..n] {
                tally.count(*verdict);
            }
            left -= n as u64;
        }
        tally
    }

    /// Feeds one packet of `pattern`; the verdict. The frame after processing is
    /// [`MemoryWorker::last_frame`].
    #[inline]
    pub fn send_one(&mut self, pattern: &mut Pattern) -> Verdict {
        let len = pattern.write_next(&mut self.buf[HEADROOM..], 0);
        self.process_in_place(len)
    }

    /// Feeds a copy of `frame`; the verdict and the frame as the pipeline left it.
    pub fn process(&mut self, frame: &[u8]) -> (Verdict, &[u8]) {
        let (verdict, start, len) = process_copy(&mut self.pipeline, &mut self.buf, frame);
        self.last_start = start;
        self.last_len = len;
        (verdict, &self.buf[start..start + len])
    }

    /// The frame the last packet became (rewritten, or as dropped).
    pub fn last_frame(&self) -> &[u8] {
        &self.buf[self.last_start..self.last_start + self.last_len]
    }

    #[inline]
    fn process_in_place(&mut self, len: usize) -> Verdict {
        let mut frame =
            Frame::new(&mut self.buf, HEADROOM, len).expect("the buffer holds any frame");
        let verdict = self.pipeline.process(&mut frame, 0);
        self.last_start = frame.start();
        self.last_len = frame.len();
        verdict
    }
}

/// Copies `frame` behind the headroom of `buf` and processes it; verdict, start and length.
fn process_copy(pipeline: &mut Pipeline, buf: &mut [u8], frame: &[u8]) -> (Verdict, usize, usize) {
    let len = frame.len().min(buf.len() - HEADROOM);
    buf[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
    let mut f = Frame::new(buf, HEADROOM, len).expect("the buffer holds any frame");
    let verdict = pipeline.process(&mut f, 0);
    (verdict, f.start(), f.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Kind, Template, parse};
    use crate::pattern::{FlowSpace, FrameSize, Mode};
    use xvs_dataplane::pipeline::counters::Drop;

    fn pattern(director: &Director, mode: Mode, flows: u64) -> Pattern {
        let space = FlowSpace::from(Director::client_base(0), 256);
        Pattern::new(
            mode,
            flows,
            space,
            FrameSize::Fixed(64),
            &director.addressing(),
        )
    }

    #[test]
    fn dr_rewrites_only_the_mac_and_spreads_round_robin() {
        let mut d = Director::new(Method::Dr, 1, 1024);
        let mut p = pattern(&d, Mode::Established, 10);
        let opened = d.worker().open(&mut p);
        assert_eq!(
            opened,
            Tally {
                forwarded: 20,
                dropped: 0
            }
        );
        assert_eq!(d.connections(), 10);
        let mut per_server = [0; 2];
        for _ in 0..10 {
            let verdict = d.worker().send_one(&mut p);
            assert_eq!(verdict, Verdict::Transmit { port: 0 });
            let out = d.worker().last_frame();
            let i = REAL_SERVER_MACS
                .iter()
                .position(|m| out[..6] == m[..])
                .unwrap();
            per_server[i] += 1;
            assert_eq!(out[6..12], DIRECTOR_MAC);
            assert_eq!(parse(out).unwrap().dst, (VIP, 80), "DR keeps the VIP");
        }
        assert_eq!(per_server, [5, 5]);
    }

    #[test]
    fn nat_rewrites_the_destination_to_a_real_server() {
        let mut d = Director::new(Method::Nat, 1, 1024);
        let mut p = pattern(&d, Mode::Udp, 4);
        for _ in 0..4 {
            assert_eq!(d.worker().send_one(&mut p), Verdict::Transmit { port: 1 });
            let got = parse(d.worker().last_frame()).unwrap();
            assert!(
                got.dst == (Method::Nat.real_server(0), 8080)
                    || got.dst == (Method::Nat.real_server(1), 8080)
            );
        }
        assert_eq!(d.connections(), 4);
    }

    #[test]
    fn tun_encapsulates_toward_the_real_server() {
        let mut d = Director::new(Method::Tun, 1, 1024);
        let mut p = pattern(&d, Mode::New, 0);
        for _ in 0..3 {
            assert_eq!(d.worker().send_one(&mut p), Verdict::Transmit { port: 0 });
            let out = d.worker().last_frame();
            assert_eq!(out.len(), 60 + 20);
            assert_eq!(out[14 + 9], 4, "IPIP");
            assert_eq!(out[14 + 12..14 + 16], DIP.octets());
            assert_eq!(parse(out).unwrap().dst, (VIP, 80), "inner packet kept");
        }
    }

    #[test]
    fn new_flows_fill_the_table_and_expire_when_time_passes() {
        let mut d = Director::new(Method::Dr, 1, 100);
        let mut p = pattern(&d, Mode::New, 0);
        let tally = d.worker().send(&mut p, 150);
        assert_eq!(tally.forwarded, 100);
        assert_eq!(tally.dropped, 50);
        assert_eq!(d.worker().counters().drops_of(Drop::TableFull), 50);
        d.advance(61); // past SYN_RECV's 60 s
        assert_eq!(d.connections(), 0);
        assert_eq!(d.worker().send(&mut p, 10).forwarded, 10);
    }

    #[test]
    fn acks_of_unknown_flows_are_dropped() {
        let mut d = Director::new(Method::Dr, 1, 100);
        let ack = Template::new(Kind::Ack, &d.addressing(), 60);
        let mut buf = [0u8; 60];
        ack.write(&mut buf, Ipv4Addr::new(10, 9, 9, 9), 1234, 0);
        assert_eq!(d.worker().process(&buf).0, Verdict::Drop);
    }

    #[test]
    fn two_workers_own_their_shards() {
        let mut d = Director::new(Method::Dr, 2, 1000);
        for w in 0..2 {
            let space = FlowSpace::from(Director::client_base(w), 16);
            let mut p = Pattern::new(
                Mode::Established,
                50,
                space,
                FrameSize::Fixed(64),
                &d.addressing(),
            );
            let worker = &mut d.workers()[w];
            assert_eq!(worker.open(&mut p).forwarded, 100);
            assert_eq!(worker.pipeline().shard().len(), 50);
        }
        assert_eq!(d.connections(), 100);
    }

    /// Every field and checksum of an IPv6 frame the director sent, recomputed by etherparse;
    /// the IPv6 header, transport header and ports.
    fn parse6(frame: &[u8]) -> (etherparse::Ipv6Header, u16, u16) {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let sliced = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("not IPv6")
        };
        let header = ip.header().to_header();
        assert_eq!(
            usize::from(header.payload_length),
            frame.len() - 14 - 40,
            "payload length"
        );
        let payload = ip.payload().payload;
        let (sport, dport) = match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let h = tcp.to_header();
                let sum = h.calc_checksum_ipv6(&header, tcp.payload()).unwrap();
                assert_eq!(h.checksum, sum, "TCP checksum");
                (h.source_port, h.destination_port)
            }
            Some(TransportSlice::Udp(udp)) => {
                let h = udp.to_header();
                assert_eq!(usize::from(h.length), payload.len(), "UDP length");
                let sum = h.calc_checksum_ipv6(&header, udp.payload()).unwrap();
                assert_eq!(h.checksum, sum, "UDP checksum");
                (h.source_port, h.destination_port)
            }
            other => panic!("not TCP or UDP: {other:?}"),
        };
        (header, sport, dport)
    }

    #[test]
    fn ipv6_frames_are_forwarded_in_dr_nat_and_tun_with_every_field_right() {
        for method in [Method::Dr, Method::Nat, Method::Tun] {
            for mode in [Mode::Established, Mode::Udp] {
                let mut d = Director::new_ipv6(method, 1, 1024);
                let mut p = pattern(&d, mode, 4);
                let opened = d.worker().open(&mut p);
                assert_eq!(opened.dropped, 0, "{method:?} {mode}");
                let mut per_server = [0; 2];
                for _ in 0..4 {
                    let verdict = d.worker().send_one(&mut p);
                    assert_eq!(
                        verdict,
                        Verdict::Transmit {
                            port: method.egress_port()
                        },
                        "{method:?} {mode}"
                    );
                    let out = d.worker().last_frame().to_vec();
                    let i = REAL_SERVER_MACS
                        .iter()
                        .position(|m| out[..6] == m[..])
                        .expect("to a real server's MAC");
                    per_server[i] += 1;
                    let src_mac = if method == Method::Nat {
                        INTERNAL_MAC
                    } else {
                        DIRECTOR_MAC
                    };
                    assert_eq!(out[6..12], src_mac);
                    assert_eq!(out[12..14], [0x86, 0xdd]);
                    // Four flows fit in the first address's ports.
                    let client = d
                        .addressing()
                        .ipv6
                        .unwrap()
                        .client(Director::client_base(0));
                    let inner = match method {
                        Method::Tun => {
                            let outer = etherparse::Ipv6Header::from_slice(&out[14..]).unwrap().0;
                            assert_eq!(
                                (outer.source, outer.destination, outer.next_header),
                                (
                                    DIP6.octets(),
                                    method.real_server6(i).octets(),
                                    etherparse::IpNumber::IPV6
                                )
                            );
                            assert_eq!(usize::from(outer.payload_length), out.len() - 54);
                            let mut inner = out[40..].to_vec();
                            inner[..14].copy_from_slice(&out[..14]);
                            inner
                        }
                        _ => out.clone(),
                    };
                    let (ip, sport, dport) = parse6(&inner);
                    let (dst, port) = match method {
                        Method::Nat => (method.real_server6(i), 8080),
                        _ => (VIP6, VIP_PORT),
                    };
                    assert_eq!((ip.source, ip.destination), (client.octets(), dst.octets()));
                    // DR forwards the frame as it came (as IPVS's DR); NAT and TUN route it.
                    let hops = if method == Method::Dr { 64 } else { 63 };
                    assert_eq!(ip.hop_limit, hops, "{method:?}");
                    assert_eq!(dport, port);
                    assert!(sport >= 1024);
                }
                assert_eq!(per_server, [2, 2], "{method:?} {mode} round robin");
                assert_eq!(d.connections(), 4);
            }
        }
    }
}
