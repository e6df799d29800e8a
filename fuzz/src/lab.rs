//! A director in memory, configured by the first three bytes of a fuzz input.
//!
//! Two dual-stack links, as the NAT lab has them: port 0 (`ext`, 192.168.0.10/24 and
//! 2001:db8::a/64, default gateways 192.168.0.1 and 2001:db8::1, one router) with the
//! clients, the DR real servers and, behind the gateway, the TUN real servers; port 1
//! (`int`, 10.0.0.1/24 and fd00::1/64) with the NAT real servers. The real servers are dual
//! stack too (one MAC for both addresses). Services:
//!
//! | service | real servers |
//! |---|---|
//! | TCP `192.168.0.100:80`, `[2001:db8::100]:80` | pool of `services` bits 0-1 |
//! | UDP `192.168.0.100:53`, `[2001:db8::100]:53` | pool of `services` bits 2-3 |
//! | TCP `192.168.0.101:0`, `[2001:db8::101]:0`, persistent (bit 6) | pool of bits 0-1, port 0 |
//!
//! Pools (each service's own family): 0 two DR servers, 1 two NAT servers (port 8080 /
//! 5353), 2 two TUN servers, 3 one of each plus a local one (the director's own address:
//! local delivery, which has no TUN device here, so it is dropped and counted) plus a TUN
//! server of the other family (IPv6-in-IPv4 for an IPv6 VIP, IPv4-in-IPv6 for an IPv4 one).
//! The lab has no firewall marks, hence no fwmark services.
//!
//! Config bytes (each bit means the same for both families):
//! - `services`: bits 0-3 the pools; bit 4 the TCP service is persistent (/24, IPv6 /64,
//!   300 s); bit 5 the UDP service schedules one packet at a time (`-o`); bit 6 the port-0
//!   service; bit 7 the first real server of each service is quiesced (weight 0).
//! - `scheduler`: bits 0-3 the scheduler (all of ipvsadm's and xvs's); bits 4-5 the link
//!   MTUs; bit 6 the second server of each pool has no resolved MAC; bit 7 no configured
//!   tunnel sources (the egress link's address is used).
//! - `options`: bits 0-1 the frame headroom (256, 28, 20, 0); bit 2 `expire_nodest_conn`;
//!   bit 3 `secure_tcp`; bit 4 `conn_reuse_mode` 0 (else 1); bit 5 a connection table of 8
//!   entries (else 4096); bit 6 the servers' upper threshold is 1 connection; bit 7 the
//!   scheduler flags `fallback` and `port` (sh, mh).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use xvs_conntrack::{ConnTable, Options};
use xvs_dataplane::icmp_limit::IcmpLimits;
use xvs_dataplane::pipeline::counters::WorkerCounters;
use xvs_dataplane::pipeline::{Clock, Pipeline, ResolveQueue, Shared, Verdict};
use xvs_dataplane::route::{Link, Neighbours, Routes};
use xvs_dataplane::service::snapshot::SnapshotBuilder;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::SyncPort;
use xvs_forwarders::Frame;

use crate::input::Input;

/// Most workers a lab has.
pub const MAX_WORKERS: usize = 2;
/// A UMEM chunk: headroom, frame and tailroom together.
pub const CHUNK: usize = 2048;
/// The director's external MAC (port 0).
pub const DIRECTOR_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
/// The director's internal MAC (port 1).
pub const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
/// The client on the external LAN.
pub const CLIENT_MAC: [u8; 6] = [2, 0xc, 0, 0, 0, 1];
/// The default gateway on the external LAN (off-net clients, TUN real servers).
pub const GATEWAY_MAC: [u8; 6] = [2, 0xa, 0, 0, 0, 1];
/// The director's external address (the tunnels' source).
pub const DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
/// The gateway's address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// The virtual IP of the TCP and UDP services.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 100);
/// The virtual IP of the persistent port-0 service.
pub const VIP_ANY_PORT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
/// The client on the external LAN.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 50);
/// A client behind the gateway.
pub const REMOTE_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// DR real servers (port 0).
pub const DR_SERVERS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 0, 11),
    Ipv4Addr::new(192, 168, 0, 12),
];
/// NAT real servers (port 1).
pub const NAT_SERVERS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)];
/// TUN real servers (behind the gateway).
pub const TUN_SERVERS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(172, 16, 0, 21), Ipv4Addr::new(172, 16, 0, 22)];
/// The director's external IPv6 address (the IPv6 tunnels' source).
pub const DIP6: Ipv6Addr = ip6(0x2001_0db8_0000_0000, 0xa);
/// The director's internal IPv6 address.
pub const INTERNAL6: Ipv6Addr = ip6(0xfd00_0000_0000_0000, 1);
/// The IPv6 default gateway (the same router as [`GATEWAY`]).
pub const GATEWAY6: Ipv6Addr = ip6(0x2001_0db8_0000_0000, 1);
/// The IPv6 virtual IP of the TCP and UDP services.
pub const VIP6: Ipv6Addr = ip6(0x2001_0db8_0000_0000, 0x100);
/// The IPv6 virtual IP of the persistent port-0 service.
pub const VIP6_ANY_PORT: Ipv6Addr = ip6(0x2001_0db8_0000_0000, 0x101);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = ip6(0x2001_0db8_0000_0000, 0x50);
/// An IPv6 client behind the gateway.
pub const REMOTE_CLIENT6: Ipv6Addr = ip6(0x2001_0db8_00ff_0000, 7);
/// IPv6 DR real servers (port 0).
pub const DR_SERVERS6: [Ipv6Addr; 2] = [
    ip6(0x2001_0db8_0000_0000, 0x11),
    ip6(0x2001_0db8_0000_0000, 0x12),
];
/// IPv6 NAT real servers (port 1).
pub const NAT_SERVERS6: [Ipv6Addr; 2] = [
    ip6(0xfd00_0000_0000_0000, 0x11),
    ip6(0xfd00_0000_0000_0000, 0x12),
];
/// IPv6 TUN real servers (behind the gateway).
pub const TUN_SERVERS6: [Ipv6Addr; 2] = [
    ip6(0x2001_0db8_0001_0000, 0x21),
    ip6(0x2001_0db8_0001_0000, 0x22),
];

const fn ip6(high: u64, low: u64) -> Ipv6Addr {
    Ipv6Addr::from_bits((high as u128) << 64 | low as u128)
}

/// The NAT real servers' TCP port (the virtual port is 80).
pub const NAT_TCP_PORT: u16 = 8080;
/// The NAT real servers' UDP port (the virtual port is 53).
pub const NAT_UDP_PORT: u16 = 5353;

/// ICMP limits that never refuse (0 turns each limit off).
const UNLIMITED_ICMP: IcmpLimits = IcmpLimits {
    ratelimit_ms: 0,
    msgs_per_sec: 0,
    msgs_burst: 0,
};

const SCHEDULERS: [&str; 16] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos",
    "rr", "wlc",
];
const MTUS: [(u16, u16); 4] = [(1500, 1500), (1500, 576), (576, 1500), (80, 68)];
const HEADROOMS: [usize; 4] = [256, 28, 20, 0];

/// The three config bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabConfig {
    /// Services and pools.
    pub services: u8,
    /// Scheduler, MTUs, neighbours, tunnel source.
    pub scheduler: u8,
    /// Headroom and table options.
    pub options: u8,
}

impl LabConfig {
    /// Reads the config from the front of the input.
    pub fn read(input: &mut Input<'_>) -> Self {
        LabConfig {
            services: input.byte(),
            scheduler: input.byte(),
            options: input.byte(),
        }
    }

    /// The config as input bytes (for the seed generator).
    pub fn bytes(self) -> [u8; 3] {
        [self.services, self.scheduler, self.options]
    }

    fn bit(byte: u8, n: u8) -> bool {
        byte & (1 << n) != 0
    }

    /// Headroom in front of each received frame.
    pub fn headroom(self) -> usize {
        HEADROOMS[usize::from(self.options & 3)]
    }
}

/// One worker: its pipeline and its counters.
pub struct Worker {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its counters (also inside the pipeline's `Shared`).
    pub counters: Arc<WorkerCounters>,
}

/// What a processed frame became.
pub struct Outcome {
    /// The frame as received (after the repairs).
    pub input: Vec<u8>,
    /// The pipeline's verdict.
    pub verdict: Verdict,
    /// The frame's bytes after processing (meaningful when transmitted).
    pub output: Vec<u8>,
}

/// The director. See the module documentation.
pub struct Lab {
    /// Its workers (one shard of the connection table each).
    pub workers: Vec<Worker>,
    /// Its links.
    pub routes: Arc<Routes>,
    /// Its resolved neighbours.
    pub neighbours: Arc<Neighbours>,
    config: LabConfig,
    builder: SnapshotBuilder,
    clock: Clock,
}

impl Lab {
    /// A director configured by `config` with `workers` workers (at most [`MAX_WORKERS`]).
    pub fn new(config: LabConfig, workers: usize) -> Lab {
        let workers = workers.clamp(1, MAX_WORKERS);
        let (mtu_ext, mtu_int) = MTUS[usize::from((config.scheduler >> 4) & 3)];
        let routes = Arc::new(Routes {
            links: vec![
                Link {
                    port: 0,
                    name: "ext".into(),
                    mac: DIRECTOR_MAC,
                    mtu: mtu_ext,
                    nets: vec![(DIP, 24)],
                    gateway: Some(GATEWAY),
                    nets6: vec![(DIP6, 64)],
                    gateway6: Some(GATEWAY6),
                },
                Link {
                    port: 1,
                    name: "int".into(),
                    mac: INTERNAL_MAC,
                    mtu: mtu_int,
                    nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
                    gateway: None,
                    nets6: vec![(INTERNAL6, 64)],
                    gateway6: None,
                },
            ],
        });
        let neighbours = Arc::new(neighbours(LabConfig::bit(config.scheduler, 6)));
        let mut builder = SnapshotBuilder::new();
        let snapshot = Arc::new(
            builder
                .build(&table(config))
                .expect("the lab's services compile"),
        );
        let options = Options {
            expire_nodest_conn: LabConfig::bit(config.options, 2),
            secure_tcp: LabConfig::bit(config.options, 3),
            conn_reuse_mode: if LabConfig::bit(config.options, 4) {
                0
            } else {
                1
            },
            ..Options::default()
        };
        let max_entries = if LabConfig::bit(config.options, 5) {
            8
        } else {
            4096
        };
        let mut table_config = xvs_conntrack::Config::new(workers, max_entries);
        table_config.options = options;
        table_config.seed = Some(0x5eed);
        table_config.now = 100;
        let (_table, shards) = ConnTable::new(table_config);
        let clock = Clock {
            secs: 100,
            millis: 100_000,
        };
        let configured = !LabConfig::bit(config.scheduler, 7);
        let (tunnel_source, tunnel_source6) = match configured {
            true => (Some(DIP), Some(DIP6)),
            false => (None, None),
        };
        let workers = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| {
                let (counters, sync) = reused_parts(i);
                // No ICMP rate limit: the limiter runs on the wall clock, so with one it would
                // let through about one director's error a second per destination, whichever
                // input happens to come then, and the oracle would rarely see the rest.
                counters.icmp.set_limits(UNLIMITED_ICMP, 1);
                let shared = Shared {
                    snapshot: snapshot.clone(),
                    routes: routes.clone(),
                    neighbours: neighbours.clone(),
                    counters: counters.clone(),
                    resolve: Arc::new(ResolveQueue::new(16)),
                    tunnel_source,
                    tunnel_source6,
                    sync,
                    local: Default::default(),
                };
                let mut pipeline = Pipeline::new(i as u16, shard, shared);
                pipeline.set_clock(clock);
                Worker { pipeline, counters }
            })
            .collect();
        Lab {
            workers,
            routes,
            neighbours,
            config,
            builder,
            clock,
        }
    }

    /// Rebuilds the service table with `services` as the new services byte and gives it to
    /// every worker (real servers of the old pools that are not in the new ones go).
    pub fn reload(&mut self, services: u8) {
        self.config.services = services;
        let snapshot = Arc::new(
            self.builder
                .build(&table(self.config))
                .expect("the lab's services compile"),
        );
        for worker in &mut self.workers {
            worker.pipeline.set_snapshot(snapshot.clone());
        }
    }

    /// Moves the clock `secs` seconds; with `housekeeping`, every worker expires what is due.
    pub fn advance(&mut self, secs: u32, housekeeping: bool) {
        self.clock.secs += secs;
        self.clock.millis += u64::from(secs) * 1000;
        for worker in &mut self.workers {
            worker.pipeline.set_clock(self.clock);
            if housekeeping {
                worker.pipeline.housekeeping();
            }
        }
    }

    /// Receives `frames` on `ingress` as one batch of `worker`, through
    /// `Pipeline::process_batch`, each in its own chunk with the configured headroom (frames
    /// longer than the chunk's room are cut).
    pub fn run_batch(&mut self, worker: usize, ingress: u8, frames: &[Vec<u8>]) -> Vec<Outcome> {
        let headroom = self.config.headroom();
        let mut chunks: Vec<Vec<u8>> = frames
            .iter()
            .map(|frame| {
                let len = frame.len().min(CHUNK - headroom);
                let mut chunk = vec![0u8; CHUNK];
                chunk[headroom..headroom + len].copy_from_slice(&frame[..len]);
                chunk
            })
            .collect();
        let inputs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| f[..f.len().min(CHUNK - headroom)].to_vec())
            .collect();
        let mut views: Vec<Frame<'_>> = chunks
            .iter_mut()
            .zip(&inputs)
            .map(|(chunk, input)| Frame::new(chunk, headroom, input.len()).expect("fits a chunk"))
            .collect();
        let mut verdicts = vec![Verdict::Drop; views.len()];
        let pipeline = &mut self.workers[worker].pipeline;
        pipeline.process_batch(&mut views, ingress, &mut verdicts);
        views
            .iter()
            .zip(verdicts)
            .zip(inputs)
            .map(|((frame, verdict), input)| Outcome {
                input,
                verdict,
                output: frame.data().to_vec(),
            })
            .collect()
    }
}

/// Worker `i`'s counters and an idle sync port, made once per thread: allocating them
/// (megabytes of per-real-server cells, the sync queues) took most of each run, and the
/// pipeline decides nothing by them (the oracle compares counter deltas; no sync daemon
/// runs, so the port stays idle). Per thread, not per process, so that the crate's tests,
/// which run labs in parallel threads, never move each other's counters mid-batch.
fn reused_parts(i: usize) -> (Arc<WorkerCounters>, Arc<SyncPort>) {
    type Parts = (Vec<Arc<WorkerCounters>>, Arc<SyncPort>);
    thread_local! {
        static PARTS: Parts = (
            (0..MAX_WORKERS)
                .map(|_| Arc::new(WorkerCounters::default()))
                .collect(),
            Arc::new(SyncPort::default()),
        );
    }
    PARTS.with(|(counters, sync)| (counters[i].clone(), sync.clone()))
}

/// Worker `i`'s counters as every lab of this thread has added to them (for reports of
/// what a corpus reaches: `examples/outcomes.rs`).
pub fn process_counters(i: usize) -> Arc<WorkerCounters> {
    reused_parts(i).0
}

/// The resolved neighbours; with `partial`, the second server of each pool is missing.
fn neighbours(partial: bool) -> Neighbours {
    let mut n = Neighbours::new();
    n.insert(0, CLIENT, CLIENT_MAC);
    n.insert(0, GATEWAY, GATEWAY_MAC);
    n.insert6(0, CLIENT6, CLIENT_MAC);
    n.insert6(0, GATEWAY6, GATEWAY_MAC);
    let servers = if partial { 1 } else { 2 };
    for i in 0..servers {
        n.insert(0, DR_SERVERS[i], server_mac(0, i));
        n.insert(1, NAT_SERVERS[i], server_mac(1, i));
        n.insert6(0, DR_SERVERS6[i], server_mac(0, i));
        n.insert6(1, NAT_SERVERS6[i], server_mac(1, i));
    }
    n
}

/// The MAC of the `i`th real server on port `port`.
pub fn server_mac(port: u8, i: usize) -> [u8; 6] {
    [2, 5, 0, 0, port, 11 + i as u8]
}

fn table(config: LabConfig) -> ServiceTableSpec {
    let s = config.services;
    let quiesce_first = LabConfig::bit(s, 7);
    let upper = u32::from(LabConfig::bit(config.options, 6));
    let mut table = ServiceTableSpec::default();
    let mut add = |protocol, vip: IpAddr, port: u16, pool: u8, persistent: bool, one_packet| {
        let addr = ServiceAddr::Inet {
            protocol,
            addr: vip,
            port,
        };
        let mut service = ServiceSpec::new(addr);
        service.scheduler = SCHEDULERS[usize::from(config.scheduler & 0x0f)].to_string();
        service.flags.fallback = LabConfig::bit(config.options, 7);
        service.flags.port = LabConfig::bit(config.options, 7);
        service.persistence = persistent.then_some(PersistenceSpec {
            timeout_secs: 300,
            prefix_len: if vip.is_ipv4() { 24 } else { 64 },
        });
        service.one_packet = one_packet;
        table.add_service(service).expect("a new service");
        for (i, (server, method, server_port)) in pool_servers(pool, vip, protocol, port)
            .into_iter()
            .enumerate()
        {
            let dest = DestSpec {
                addr: server,
                port: server_port,
                method,
                weight: if i == 0 && quiesce_first {
                    0
                } else {
                    1 + i as u32
                },
                upper_threshold: upper,
                lower_threshold: 0,
            };
            table.add_dest(&addr, dest).expect("a new real server");
        }
    };
    for (vip, vip_any_port) in [
        (IpAddr::V4(VIP), IpAddr::V4(VIP_ANY_PORT)),
        (IpAddr::V6(VIP6), IpAddr::V6(VIP6_ANY_PORT)),
    ] {
        add(Protocol::Tcp, vip, 80, s & 3, LabConfig::bit(s, 4), false);
        add(
            Protocol::Udp,
            vip,
            53,
            (s >> 2) & 3,
            false,
            LabConfig::bit(s, 5),
        );
        if LabConfig::bit(s, 6) {
            add(Protocol::Tcp, vip_any_port, 0, s & 3, true, false);
        }
    }
    table
}

/// The real servers of pool `pool` for a service of `vip`'s family on `vport` (0: every
/// port).
fn pool_servers(
    pool: u8,
    vip: IpAddr,
    protocol: Protocol,
    vport: u16,
) -> Vec<(IpAddr, ForwardMethod, u16)> {
    let nat_port = match (vport, protocol) {
        (0, _) => 0,
        (_, Protocol::Tcp) => NAT_TCP_PORT,
        (_, Protocol::Udp) => NAT_UDP_PORT,
        // Services are TCP or UDP only (the model refuses ICMP); no port to map.
        (_, Protocol::Icmp) => 0,
    };
    let v4 = |a: [Ipv4Addr; 2]| a.map(IpAddr::V4);
    let v6 = |a: [Ipv6Addr; 2]| a.map(IpAddr::V6);
    // This family's DR, NAT and TUN servers, the director's own address, and the TUN server
    // of the other family.
    let (dr, nat, tun, own, other_tun) = match vip {
        IpAddr::V4(_) => (
            v4(DR_SERVERS),
            v4(NAT_SERVERS),
            v4(TUN_SERVERS),
            IpAddr::V4(DIP),
            IpAddr::V6(TUN_SERVERS6[1]),
        ),
        IpAddr::V6(_) => (
            v6(DR_SERVERS6),
            v6(NAT_SERVERS6),
            v6(TUN_SERVERS6),
            IpAddr::V6(DIP6),
            IpAddr::V4(TUN_SERVERS[1]),
        ),
    };
    let pair =
        |servers: [IpAddr; 2], method, port| servers.iter().map(|&a| (a, method, port)).collect();
    match pool {
        0 => pair(dr, ForwardMethod::Route, vport),
        1 => pair(nat, ForwardMethod::Masq, nat_port),
        2 => pair(tun, ForwardMethod::Tunnel, vport),
        _ => vec![
            (dr[0], ForwardMethod::Route, vport),
            (nat[0], ForwardMethod::Masq, nat_port),
            (tun[0], ForwardMethod::Tunnel, vport),
            (own, ForwardMethod::Route, vport),
            (other_tun, ForwardMethod::Tunnel, vport),
        ],
    }
}
