//! The running director: workers on AF_XDP ports, the XDP filters, and the side thread.
//!
//! [`Runtime::start`] opens everything for the configured interfaces: an XDP filter on each
//! (through a BPF link, so a crash detaches it), one AF_XDP socket per (interface, queue),
//! one connection-table shard and one pinned worker thread per queue, and the side thread.
//! The control plane then calls [`Runtime::update`] with each accepted configuration: the
//! table is compiled into a new [`Snapshot`], the filters' maps are updated (new entries
//! first, stale ones after), and the snapshot is published to the workers, which pick it up
//! between batches. No packet is held up by a reload, and connections keep their real server
//! unless it was removed (then IPVS's `expire_nodest_conn` decides).
//!
//! The side thread, every 50 ms: asks the kernel to resolve the next hops the workers could
//! not find, re-reads the kernel's neighbour table and publishes it when it changed; every
//! second it rolls up the workers' counters, and every 2 seconds it advances the rate
//! estimates.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xvs_conntrack::{
    Config, ConnTable, Defense, DefenseMode, Listed, Options, SetTimeouts, ShardStats,
};

use crate::icmp_limit::IcmpLimits;

use crate::afxdp::{AfXdpPorts, CopyMode, XskConfig};
use crate::ceiling::IoCeiling;
use crate::local::LocalDelivery;
use crate::neigh::NeighbourCache;
use crate::netdev::NetDev;
use crate::packet_io::PacketIo;
use crate::pipeline::counters::WorkerCounters;
use crate::pipeline::{Pipeline, ResolveQueue, Shared};
use crate::publish::Published;
use crate::route::{Link, Neighbours, Routes};
use crate::service::snapshot::{BuildError, Snapshot, SnapshotBuilder};
use crate::service::spec::ServiceTableSpec;
use crate::stats::{ESTIMATE_INTERVAL_SECS, StatsRollup};
use crate::syn_filter::{SynFilterStatus, SynGuard};
use crate::sync::{SyncControl, SyncPort};
use crate::worker::{self, WorkerInputs};
use crate::xdp::{AttachMode, MarkEntry, Match, Match6, XdpFilter, XdpMode};
use xvs_model::mark::MarkRule;

/// How the director runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Interfaces in port order: one (one arm), or external then internal (two arms).
    pub ifaces: Vec<String>,
    /// Queues per interface, one worker each; `None`: the first interface's RX queues.
    pub queues: Option<u32>,
    /// Cores to pin the workers to, in queue order; `None`: no pinning.
    pub cores: Option<Vec<usize>>,
    /// The workers' nice value (0: the default; negative: precedence over other processes on
    /// their cores, as the kernel's softirq forwarding has).
    pub worker_nice: i32,
    /// Most connections and templates the table holds.
    pub max_connections: usize,
    /// Outer source of tunnelled packets; `None`: the egress interface's first address.
    pub tunnel_source: Option<Ipv4Addr>,
    /// Outer source of IPv6 tunnels; `None`: the egress interface's global IPv6 address.
    pub tunnel_source6: Option<Ipv6Addr>,
    /// AF_XDP sizes and bind mode.
    pub xsk: XskConfig,
    /// XDP attach mode.
    pub attach: AttachMode,
    /// IPVS behaviour switches.
    pub options: Options,
    /// `--set tcp tcpfin udp`.
    pub timeouts: SetTimeouts,
    /// Run the workers' I/O ceiling ([`crate::ceiling`]) instead of the pipeline: for
    /// `make bench-compare` only.
    pub io_ceiling: bool,
    /// SYN-flood defence (`[defense]`).
    pub defense: Defense,
    /// Limits of the ICMP errors the director sends (`[icmp]`).
    pub icmp: IcmpLimits,
    /// The mark rules fwmark services are served by (`[[mark]]`).
    pub marks: Vec<MarkRule>,
}

/// Why the director could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An interface could not be used.
    #[error("interface {iface}: {source}")]
    Interface {
        /// Its name.
        iface: String,
        /// Why.
        source: io::Error,
    },
    /// The XDP filter could not be loaded or attached.
    #[error("XDP filter on {iface}: {source}")]
    Filter {
        /// Interface name.
        iface: String,
        /// Why (boxed: aya's errors are large).
        source: Box<crate::xdp::XdpError>,
    },
    /// AF_XDP sockets could not be opened.
    #[error("{0}")]
    Sockets(#[from] crate::afxdp::XskError),
    /// The configuration cannot be compiled.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// Anything else from the system.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How one port runs, for logs and `xvsadm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMode {
    /// Interface name.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// AF_XDP copy or zero-copy.
    pub copy: CopyMode,
    /// XDP native or generic.
    pub xdp: XdpMode,
}

/// The connection table's fill and its lifetime counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnTableUse {
    /// Entries the table holds at most (connections and templates together).
    pub capacity: u64,
    /// Live entries by kind, and counts since start, summed over the shards.
    pub stats: ShardStats,
}

/// The running director.
pub struct Runtime {
    builder: SnapshotBuilder,
    /// The table last compiled: new mark rules are compiled with it.
    table: ServiceTableSpec,
    snapshot: Arc<Published<Snapshot>>,
    conns: ConnTable,
    /// Sum of the shards' slot counts (fixed at start).
    conn_capacity: u64,
    filters: Vec<XdpFilter>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    side: Option<JoinHandle<()>>,
    stats: Arc<Mutex<StatsRollup>>,
    modes: Vec<PortMode>,
    epoch: Instant,
    routes: Arc<Routes>,
    resolve: Arc<ResolveQueue>,
    sync: Option<SyncControl>,
    local: Arc<OnceLock<LocalDelivery>>,
    /// The workers' counters, whose ICMP limiters a reload re-configures.
    icmp_limiters: Vec<Arc<WorkerCounters>>,
    /// The SYN filter's reloads in, its status out (the side thread drives it).
    syn_filter: Arc<Mutex<SynShared>>,
}

/// Between the runtime and the side thread that drives the SYN filter once a second.
#[derive(Debug)]
struct SynShared {
    /// A reload's `(mode, flood rate)`, taken at the next second.
    configure: Option<(DefenseMode, u32)>,
    /// What the filter did in the last second.
    status: SynFilterStatus,
}

/// Stops and joins the workers of a start that failed halfway.
struct StartedWorkers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<io::Result<()>>>,
}

impl Drop for StartedWorkers {
    fn drop(&mut self) {
        if self.handles.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Opens the TUN device for local real servers once `snapshot` has one (a failure is logged
/// and retried at the next change; meanwhile their packets are dropped and counted).
fn open_local_delivery_if_needed(
    local: &OnceLock<LocalDelivery>,
    routes: &Routes,
    snapshot: &Snapshot,
) {
    if local.get().is_some() {
        return;
    }
    let wanted = snapshot
        .dests()
        .any(|(_, d, _)| ipv4_of(d.spec.addr).is_some_and(|a| routes.is_own(a)));
    if !wanted {
        return;
    }
    match LocalDelivery::open() {
        Ok(device) => {
            let _ = local.set(device);
            tracing::info!(
                device = crate::local::DEVICE,
                "local real servers are served through the TUN device"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, device = crate::local::DEVICE, "no TUN device: local real servers cannot be served");
        }
    }
}

/// Asks for the MAC of every real server's next hop, so the first packet to a new server
/// does not wait for resolution (a dropped SYN costs the client a one-second retransmit).
fn resolve_next_hops(routes: &Routes, snapshot: &Snapshot, resolve: &ResolveQueue) {
    for (_, dest, _) in snapshot.dests() {
        let hop = match dest.spec.addr {
            IpAddr::V4(ip) => routes.next_hop(ip).map(|(port, hop)| (port, hop.into())),
            IpAddr::V6(ip) => routes.next_hop6(ip).map(|(port, hop)| (port, hop.into())),
        };
        if let Some(hop) = hop {
            let _ = resolve.push(hop);
        }
    }
}

impl Runtime {
    /// Opens the interfaces and starts the workers with `table`.
    pub fn start(
        config: &RuntimeConfig,
        table: &ServiceTableSpec,
    ) -> Result<Runtime, RuntimeError> {
        let devs = config
            .ifaces
            .iter()
            .map(|name| {
                NetDev::by_name(name).map_err(|source| RuntimeError::Interface {
                    iface: name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let routes = Arc::new(routes_of(&devs)?);
        let queues = config.queues.unwrap_or_else(|| devs[0].rx_queues.max(1));

        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(&config.marks);
        let first = Arc::new(builder.build(table)?);
        let snapshot = Arc::new(Published::new(first.clone()));

        let mut filters = Vec::new();
        for dev in &devs {
            let filter = XdpFilter::attach(dev.ifindex, config.attach).map_err(|source| {
                RuntimeError::Filter {
                    iface: dev.name.clone(),
                    source: Box::new(source),
                }
            })?;
            filters.push(filter);
        }
        // The director's own addresses (VIPs on its interfaces included) stay the kernel's
        // for traffic from NAT real servers.
        let locals: Vec<Ipv4Addr> = devs
            .iter()
            .flat_map(|d| d.ipv4.iter().map(|&(a, _)| a))
            .collect();
        let locals6: Vec<Ipv6Addr> = devs
            .iter()
            .flat_map(|d| d.ipv6.iter().map(|&(a, _)| a))
            .collect();
        for (dev, filter) in devs.iter().zip(filters.iter_mut()) {
            filter
                .set_locals(&locals)
                .and_then(|()| filter.set_locals6(&locals6))
                .map_err(|source| RuntimeError::Filter {
                    iface: dev.name.clone(),
                    source: Box::new(source),
                })?;
        }
        set_filter_maps(&mut filters, &first).map_err(|source| RuntimeError::Filter {
            iface: devs[0].name.clone(),
            source: Box::new(source),
        })?;

        let neighbour_cache =
            NeighbourCache::open(&devs.iter().map(|d| d.ifindex).collect::<Vec<_>>())?;
        let neighbours = Arc::new(Published::new(Arc::new(neighbour_cache.neighbours())));
        let resolve = Arc::new(ResolveQueue::new(1024));
        let tunnel_source = config.tunnel_source;
        let tunnel_source6 = config.tunnel_source6;

        let mut table_config = Config::new(queues as usize, config.max_connections);
        table_config.options = config.options;
        table_config.defense = config.defense;
        let (conns, shards) = ConnTable::new(table_config);
        conns.timeouts().set(config.timeouts);
        let conn_capacity = shards.iter().map(|s| s.capacity() as u64).sum();

        // Local real servers (the director's own addresses) are served through a TUN device,
        // opened when the first one appears.
        let local = Arc::new(OnceLock::new());
        open_local_delivery_if_needed(&local, &routes, &first);
        let stop = Arc::new(AtomicBool::new(false));
        // Workers started before a later queue fails are stopped and joined on the way out.
        let mut started = StartedWorkers {
            stop: stop.clone(),
            handles: Vec::new(),
        };
        let epoch = Instant::now();
        let names: Vec<&str> = config.ifaces.iter().map(String::as_str).collect();
        let mut counters = Vec::new();
        let mut modes = Vec::new();
        let mut sync_ports = Vec::new();
        for (queue, shard) in (0..queues).zip(shards) {
            let mut ports = AfXdpPorts::open(&names, queue, &config.xsk)?;
            for (port, filter) in filters.iter_mut().enumerate() {
                let fd = ports
                    .socket_fd(port)
                    .ok_or_else(|| io::Error::other("missing socket"))?;
                filter
                    .register_socket(queue, fd)
                    .map_err(|source| RuntimeError::Filter {
                        iface: config.ifaces[port].clone(),
                        source: Box::new(source),
                    })?;
                let copy = ports.mode(port).unwrap_or(CopyMode::Copy);
                modes.push(PortMode {
                    iface: config.ifaces[port].clone(),
                    queue,
                    copy,
                    xdp: filter.mode(),
                });
                tracing::info!(iface = %config.ifaces[port], queue, af_xdp = %copy, xdp = %filter.mode(), "port open");
            }
            let worker_counters = Arc::new(WorkerCounters::default());
            worker_counters
                .icmp
                .set_limits(config.icmp, queues as usize);
            counters.push(worker_counters.clone());
            let sync_port = Arc::new(SyncPort::default());
            sync_ports.push(sync_port.clone());
            let shared = Shared {
                snapshot: first.clone(),
                routes: routes.clone(),
                neighbours: neighbours.load(),
                counters: worker_counters,
                resolve: resolve.clone(),
                tunnel_source,
                tunnel_source6,
                sync: sync_port,
                local: local.clone(),
            };
            let inputs = WorkerInputs {
                snapshot: snapshot.subscribe(),
                neighbours: neighbours.subscribe(),
                stop: stop.clone(),
                epoch,
            };
            let core = config
                .cores
                .as_ref()
                .and_then(|c| c.get(queue as usize).copied());
            let io_ceiling = config.io_ceiling;
            let nice = config.worker_nice;
            let handle = std::thread::Builder::new()
                .name(format!("xvs-worker-{queue}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
                    {
                        tracing::warn!(queue, core, "could not pin the worker");
                    }
                    if nice != 0
                        && let Err(e) = set_thread_nice(nice)
                    {
                        tracing::warn!(queue, nice, error = %e, "could not set the worker's nice value");
                    }
                    let result = if io_ceiling {
                        tracing::warn!(
                            queue,
                            "I/O ceiling: frames are only re-addressed, not load balanced"
                        );
                        // The shard stays alive (and empty) as long as the worker runs.
                        let _shard = shard;
                        worker::run(&mut ports, &mut IoCeiling::new(shared), inputs)
                    } else {
                        let mut pipeline = Pipeline::new(queue as u16, shard, shared);
                        worker::run(&mut ports, &mut pipeline, inputs)
                    };
                    if let Err(e) = &result {
                        tracing::error!(queue, error = %e, "worker stopped");
                    }
                    log_socket_losses(&ports);
                    result
                })?;
            started.handles.push(handle);
        }

        let icmp_limiters = counters.clone();
        let stats = Arc::new(Mutex::new(StatsRollup::new(counters)));
        resolve_next_hops(&routes, &first, &resolve);
        let syn_filter = Arc::new(Mutex::new(SynShared {
            configure: None,
            status: SynFilterStatus {
                mode: config.defense.syn_filter,
                ..SynFilterStatus::default()
            },
        }));
        let syn_maps = filters
            .iter_mut()
            .filter_map(XdpFilter::take_syn_filter)
            .collect();
        let side = spawn_side_thread(SideThread {
            neighbour_cache,
            neighbours,
            resolve: resolve.clone(),
            snapshot: snapshot.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            syn_guard: SynGuard::new(
                syn_maps,
                config.defense.syn_filter,
                config.defense.syn_flood_rate,
            ),
            syn_filter: syn_filter.clone(),
            conns: conns.clone(),
        })?;
        let sync = SyncControl::spawn(sync_ports, conns.clone(), snapshot.clone(), epoch)?;
        let workers = std::mem::take(&mut started.handles);
        Ok(Runtime {
            builder,
            table: table.clone(),
            snapshot,
            conns,
            conn_capacity,
            filters,
            stop,
            workers,
            side: Some(side),
            stats,
            modes,
            epoch,
            routes,
            resolve,
            sync: Some(sync),
            local,
            icmp_limiters,
            syn_filter,
        })
    }

    /// Whether `addr` is the director's own, so a real server there is `Local`.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        ipv4_of(addr).is_some_and(|a| self.routes.is_own(a))
    }

    /// The connection sync daemons.
    pub fn sync(&self) -> Option<&SyncControl> {
        self.sync.as_ref()
    }

    /// Compiles and publishes a new configuration; the filters follow. On error nothing
    /// changes.
    pub fn update(&mut self, table: &ServiceTableSpec) -> Result<(), RuntimeError> {
        let builder = self.builder.clone();
        self.publish_build(builder, table)
    }

    /// Compiles and publishes the current table with new mark rules (a reload): connections
    /// keep their real servers, as for any other rebuild. On error nothing changes.
    pub fn set_mark_rules(&mut self, rules: &[MarkRule]) -> Result<(), RuntimeError> {
        let mut builder = self.builder.clone();
        builder.set_mark_rules(rules);
        let table = self.table.clone();
        self.publish_build(builder, &table)
    }

    /// The mark rules in force.
    pub fn mark_rules(&self) -> &[MarkRule] {
        self.builder.mark_rules()
    }

    /// The table last compiled.
    pub fn table(&self) -> &ServiceTableSpec {
        &self.table
    }

    fn publish_build(
        &mut self,
        mut builder: SnapshotBuilder,
        table: &ServiceTableSpec,
    ) -> Result<(), RuntimeError> {
        // Build on a copy: the builder's memory of real servers changes only if all succeeds.
        let next = Arc::new(builder.build(table)?);
        let previous = self.snapshot.load();
        // Count the last packets of the old table before it goes.
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .collect(&previous);
        set_filter_maps(&mut self.filters, &next).map_err(|source| RuntimeError::Filter {
            iface: String::new(),
            source: Box::new(source),
        })?;
        resolve_next_hops(&self.routes, &next, &self.resolve);
        open_local_delivery_if_needed(&self.local, &self.routes, &next);
        self.snapshot.publish(next);
        self.builder = builder;
        self.table = table.clone();
        Ok(())
    }

    /// `--set tcp tcpfin udp`.
    pub fn set_timeouts(&self, timeouts: SetTimeouts) {
        self.conns.timeouts().set(timeouts);
    }

    /// IPVS behaviour switches.
    pub fn set_options(&self, options: Options) {
        self.conns.set_options(options);
    }

    /// Replaces the SYN-flood defence's settings (a reload), the SYN filter's included
    /// (taken at the side thread's next second).
    pub fn set_defense(&self, defense: Defense) {
        self.conns.set_defense(defense);
        self.syn_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .configure = Some((defense.syn_filter, defense.syn_flood_rate));
    }

    /// What the XDP SYN filter did in the last second ([`crate::syn_filter`]).
    pub fn syn_filter_status(&self) -> SynFilterStatus {
        self.syn_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status
    }

    /// Replaces the limits of the ICMP errors the workers send (a reload). The workers'
    /// buckets start afresh; a worker sending an error at that instant may see the old
    /// limit for it (the cells are relaxed atomics).
    pub fn set_icmp_limits(&self, limits: IcmpLimits) {
        for counters in &self.icmp_limiters {
            counters.icmp.set_limits(limits, self.icmp_limiters.len());
        }
    }

    /// The service table in use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// Reads the statistics under their lock (collected first, so they are current).
    pub fn with_stats<R>(&self, f: impl FnOnce(&StatsRollup) -> R) -> R {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.collect(&self.snapshot.load());
        f(&stats)
    }

    /// `-Z`.
    pub fn zero(&self, service: Option<&crate::service::spec::ServiceAddr>) {
        let snapshot = self.snapshot.load();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.collect(&snapshot);
        stats.zero(&snapshot, service);
    }

    /// Every connection and template, with seconds left before it expires.
    pub fn connections(&self) -> Vec<(Listed, u32)> {
        let now = self.epoch.elapsed().as_secs() as u32 + 1;
        let mut all = Vec::new();
        for shard in 0..self.conns.shard_count() {
            self.conns.for_each_entry(shard as u16, |entry| {
                all.push((entry, entry.expires.saturating_sub(now)));
            });
        }
        all
    }

    /// Workers still running, of those started. A worker stops only when its ports fail (it
    /// logs why); its queue's traffic then falls to the kernel, so listings show the count.
    pub fn workers_running(&self) -> (usize, usize) {
        let running = self.workers.iter().filter(|w| !w.is_finished()).count();
        (running, self.workers.len())
    }

    /// Whether each worker still runs, in queue order (see [`Runtime::workers_running`]).
    pub fn worker_states(&self) -> Vec<bool> {
        self.workers.iter().map(|w| !w.is_finished()).collect()
    }

    /// How full the connection table is; reads counters only, never walks the table.
    pub fn conn_table_use(&self) -> ConnTableUse {
        ConnTableUse {
            capacity: self.conn_capacity,
            stats: self.conns.stats(),
        }
    }

    /// How each port runs.
    pub fn modes(&self) -> &[PortMode] {
        &self.modes
    }

    /// Stops the workers and the side thread and detaches the filters.
    pub fn stop(&mut self) {
        // The sync thread first: its last message goes out while the workers still run.
        self.sync.take();
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(side) = self.side.take() {
            let _ = side.join();
        }
        // Dropping the filters closes their BPF links, which detaches the programs.
        self.filters.clear();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The links the workers route over, from the interfaces' facts and the main routing table.
fn routes_of(devs: &[NetDev]) -> io::Result<Routes> {
    let gateways = default_gateways()?;
    // A kernel without IPv6 has no such file: no IPv6 default routes then.
    let gateways6 = std::fs::read_to_string("/proc/net/ipv6_route")
        .map(|text| parse_default_gateways6(&text))
        .unwrap_or_default();
    let links = devs
        .iter()
        .enumerate()
        .map(|(port, dev)| Link {
            port: port as u8,
            name: dev.name.clone(),
            mac: dev.mac,
            mtu: dev.mtu.min(u32::from(u16::MAX)) as u16,
            nets: dev.ipv4.clone(),
            gateway: gateways
                .iter()
                .find(|(name, _)| *name == dev.name)
                .map(|&(_, gw)| gw),
            nets6: dev.ipv6.clone(),
            gateway6: gateways6
                .iter()
                .find(|(name, _)| *name == dev.name)
                .map(|&(_, gw)| gw),
        })
        .collect();
    Ok(Routes { links })
}

/// Sets the calling thread's nice value: on Linux a nice value belongs to the thread
/// (`setpriority(2)`, "BUGS"), so a worker's does not change the control plane's.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority only reads its three integer arguments; `who` 0 is the calling
    // thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Default routes from `/proc/net/route`: (interface, gateway).
fn default_gateways() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let text = std::fs::read_to_string("/proc/net/route")?;
    Ok(parse_default_gateways(&text))
}

fn parse_default_gateways(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags ... Mask: default route = destination 0, mask 0.
            if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            // The file prints the address in host (little-endian) order.
            Some((f[0].to_string(), Ipv4Addr::from(gw.swap_bytes())))
        })
        .filter(|(_, gw)| !gw.is_unspecified())
        .collect()
}

/// IPv6 default routes from `/proc/net/ipv6_route`: (interface, gateway). A line is
/// `destination prefix source prefix next-hop metric refcnt use flags device`, addresses
/// as 32 hex digits; the default route has destination `::` and prefix 0.
fn parse_default_gateways6(text: &str) -> Vec<(String, Ipv6Addr)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[0] != "0".repeat(32) || f[1] != "00" {
                return None;
            }
            let gw = u128::from_str_radix(f[4], 16).ok()?;
            Some((f[9].to_string(), Ipv6Addr::from(gw)))
        })
        .filter(|(_, gw)| !gw.is_unspecified())
        .collect()
}

/// Points every filter's maps at `snapshot`'s VIPs and NAT real servers.
fn set_filter_maps(
    filters: &mut [XdpFilter],
    snapshot: &Snapshot,
) -> Result<(), crate::xdp::XdpError> {
    let (vips, nat) = snapshot.filter_matches();
    let to_match = |(proto, addr, port): (u8, u32, u16)| Match {
        addr: Ipv4Addr::from(addr),
        port,
        proto,
    };
    let vips: Vec<Match> = vips.into_iter().map(to_match).collect();
    let nat: Vec<Match> = nat.into_iter().map(to_match).collect();
    let marks: Vec<MarkEntry> = [false, true]
        .into_iter()
        .flat_map(|ipv6| snapshot.marks().filter_entries(ipv6))
        .map(|(proto, dst, ports)| MarkEntry {
            proto,
            addr: dst.addr(),
            prefix_len: dst.len(),
            ports: ports.iter().map(|r| (r.first, r.last)).collect(),
        })
        .collect();
    let (vips6, nat6) = snapshot.filter_matches6();
    let to_match6 = |(proto, addr, port)| Match6 { addr, port, proto };
    let vips6: Vec<Match6> = vips6.into_iter().map(to_match6).collect();
    let nat6: Vec<Match6> = nat6.into_iter().map(to_match6).collect();
    for filter in filters {
        filter.set_vips(&vips)?;
        filter.set_marks(&marks)?;
        filter.set_nat_returns(&nat)?;
        filter.set_vips6(&vips6)?;
        filter.set_nat_returns6(&nat6)?;
    }
    Ok(())
}

struct SideThread {
    neighbour_cache: NeighbourCache,
    neighbours: Arc<Published<Neighbours>>,
    resolve: Arc<ResolveQueue>,
    snapshot: Arc<Published<Snapshot>>,
    stats: Arc<Mutex<StatsRollup>>,
    stop: Arc<AtomicBool>,
    syn_guard: SynGuard,
    syn_filter: Arc<Mutex<SynShared>>,
    /// For the table's pressure, one sign of a damaging flood.
    conns: ConnTable,
}

fn spawn_side_thread(mut side: SideThread) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("xvs-side".into()).spawn(move || {
        let tick = Duration::from_millis(50);
        let mut last_collect = Instant::now();
        let mut last_estimate = Instant::now();
        let mut published = side.neighbours.load();
        let mut rx_ring_full = 0;
        while !side.stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            while let Some((port, addr)) = side.resolve.pop() {
                if let Err(e) = side.neighbour_cache.request(port, addr) {
                    tracing::warn!(%addr, port, error = %e, "neighbour resolution request failed");
                }
            }
            match side.neighbour_cache.refresh() {
                Ok(_) => {
                    let fresh = side.neighbour_cache.neighbours();
                    if fresh != *published {
                        published = Arc::new(fresh);
                        side.neighbours.publish(published.clone());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the neighbour table"),
            }
            let now = Instant::now();
            if now.duration_since(last_collect) >= Duration::from_secs(1) {
                let snapshot = side.snapshot.load();
                let mut stats = side.stats.lock().unwrap_or_else(PoisonError::into_inner);
                stats.collect(&snapshot);
                if now.duration_since(last_estimate) >= Duration::from_secs(ESTIMATE_INTERVAL_SECS) {
                    stats.estimate();
                    last_estimate = now;
                }
                // A flood does damage when the table is under pressure or the kernel lost
                // frames at a full RX ring this second.
                let lost = stats.frames().rx_ring_full;
                drop(stats);
                let damage =
                    side.conns.defense_status().under_pressure || lost > rx_ring_full;
                rx_ring_full = lost;
                drive_syn_filter(&mut side.syn_guard, &side.syn_filter, damage);
                last_collect = now;
            }
        }
    })
}

/// One second of the SYN filter: a reload's settings first, then the decision.
fn drive_syn_filter(guard: &mut SynGuard, shared: &Mutex<SynShared>, damage: bool) {
    let configure = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .configure
        .take();
    if let Some((mode, rate)) = configure {
        guard.configure(mode, rate);
    }
    let status = guard.second(damage);
    shared.lock().unwrap_or_else(PoisonError::into_inner).status = status;
}

/// An address as IPv6 for the IPv6 tunnel source, when it is one.
pub fn ipv6_of(addr: IpAddr) -> Option<Ipv6Addr> {
    match addr {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// An address as IPv4 for the tunnel source, when it is one.
pub fn ipv4_of(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

impl Runtime {
    /// A read-only handle on the connection table for control-side walks off the packet
    /// path (the health checker's count of connections stuck in SYN_RECV): walking with
    /// [`ConnTable::for_each_entry`] takes no lock the workers wait for.
    pub fn conn_table(&self) -> ConnTable {
        self.conns.clone()
    }
}

/// Logs, as a worker stops, what the kernel dropped at its AF_XDP sockets: losses the
/// worker's own counters cannot see (a full RX ring, an empty fill ring).
fn log_socket_losses(ports: &AfXdpPorts) {
    for port in 0..ports.port_count() {
        if let Ok(s) = ports.kernel_stats(port) {
            let own = ports.stats(port);
            tracing::info!(
                rx_packets = own.rx_packets,
                tx_packets = own.tx_packets,
                wakeups = own.wakeups,
                iface = ports.ifname(port).unwrap_or("?"),
                queue = ports.queue(),
                rx_dropped = s.rx_dropped,
                rx_ring_full = s.rx_ring_full,
                rx_fill_ring_empty = s.rx_fill_ring_empty,
                rx_invalid_descs = s.rx_invalid_descs,
                tx_invalid_descs = s.tx_invalid_descs,
                "AF_XDP socket kernel counters"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from `/proc/thread-self/stat` (field 19).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces: count from its closing parenthesis.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_workers_nice_value_is_its_own_thread_s_only() {
        let before = own_nice();
        let worker = std::thread::spawn(|| {
            set_thread_nice(7).unwrap();
            own_nice()
        });
        assert_eq!(worker.join().unwrap(), 7);
        assert_eq!(
            own_nice(),
            before,
            "the spawning thread keeps its nice value"
        );
    }

    #[test]
    fn reads_ipv6_default_gateways_from_proc_net_ipv6_route() {
        let text = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(
            parse_default_gateways6(text),
            vec![("eth0".to_string(), "fe80::1".parse().unwrap())]
        );
    }

    #[test]
    fn reads_default_gateways_from_proc_net_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\tFE28A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0028A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateways(text),
            vec![("eth0".to_string(), Ipv4Addr::new(192, 168, 40, 254))]
        );
    }
}
