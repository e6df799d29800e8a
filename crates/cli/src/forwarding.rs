//! The real [`Dataplane`]: xvs's AF_XDP runtime behind the daemon's control side.
//!
//! [`AfXdpDataplane::start`] opens the configured interfaces with
//! [`xvs_dataplane::runtime::Runtime`] (XDP filters, AF_XDP sockets, pinned workers, the side
//! thread); configuration changes are compiled and published to the workers; listings get
//! the live counters: ActiveConn/InActConn/PersistConn from the real servers' shared loads,
//! `--stats` and `--rate` from the statistics roll-up, `-c` from the connection table.

use std::net::IpAddr;

use xvs_conntrack::Protocol as ConnProtocol;
use xvs_dataplane::afxdp::XskConfig;
use xvs_dataplane::runtime::{PortMode, Runtime, RuntimeConfig, ipv4_of, ipv6_of};
use xvs_dataplane::service::marks::unmarked_services;
use xvs_dataplane::service::snapshot::{Snapshot, check_supported};
use xvs_dataplane::service::spec::{ServiceAddr, ServiceTableSpec, SocketText};
use xvs_dataplane::stats::FrameCounters;
use xvs_dataplane::xdp::AttachMode;
use xvs_model::mark::MarkRule;

use crate::config::{DaemonConfig, Interfaces, SyncConfig};
use crate::daemon::Dataplane;
use crate::director::{DaemonArgs, ListRequest};
use crate::listing::{
    ConnEntry, DataplaneInfo, DefenseInfo, ListData, PortInfo, Timeouts, UmemInfo, WorkerInfo,
};
use crate::metrics::{
    ConnTableMetrics, DataplaneMetrics, DefenseMetrics, PortMetrics, WorkerMetrics,
};
use xvs_dataplane::pipeline::counters::Drop;
use xvs_dataplane::sync::{Role, SyncControl, SyncOptions};
use xvs_forwarders::Reason;

/// Connections and templates per entry of IPVS's `size=` (its hash table): the table holds
/// `conn_table_size * ENTRIES_PER_BUCKET` entries (4096 -> 262144 by default).
pub const ENTRIES_PER_BUCKET: usize = 64;

/// Refuses a connection table this machine could not hold when full: `xvs check` and the
/// daemon's start say so in one line instead of the daemon dying on a failed allocation
/// later. (An empty table costs almost nothing: its memory grows with its entries.)
pub fn check_table_memory(conn_table_size: u32) -> Result<(), String> {
    let entries = conn_table_size as usize * ENTRIES_PER_BUCKET;
    let needed = xvs_conntrack::memory_when_full(entries, 1);
    let Some(total) = memory_total() else {
        return Ok(());
    };
    if needed <= total {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    Err(format!(
        "daemon.conn_table_size: {conn_table_size} ({entries} entries) needs {:.1} GiB when full, more than this machine's {:.1} GiB of memory",
        gib(needed),
        gib(total)
    ))
}

/// MemTotal from /proc/meminfo, in bytes.
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Logs each fwmark service no mark rule serves: accepted (IPVS accepts a service nothing
/// marks for), but it receives no traffic until a `[[mark]]` gives its mark.
fn warn_unmarked(table: &ServiceTableSpec, rules: &[MarkRule]) {
    for mark in unmarked_services(table, rules) {
        tracing::warn!(
            mark,
            "fwmark service {mark}: no [[mark]] rule gives mark {mark}, so it receives no traffic"
        );
    }
}

/// The AF_XDP dataplane; `None` until started.
#[derive(Default)]
pub struct AfXdpDataplane {
    runtime: Option<Runtime>,
    /// The director's first interface: sync daemons use it unless told otherwise.
    first_iface: String,
    /// Workers run the I/O ceiling instead of the pipeline (`xvs run --io-ceiling`).
    io_ceiling: bool,
}

impl AfXdpDataplane {
    /// A dataplane whose workers only re-address frames toward the real servers: the I/O
    /// ceiling `make bench-compare` measures xvs against (`xvs_dataplane::ceiling`).
    pub fn io_ceiling() -> Self {
        AfXdpDataplane {
            io_ceiling: true,
            ..AfXdpDataplane::default()
        }
    }

    /// How the ports run (empty before start).
    pub fn modes(&self) -> Vec<PortMode> {
        self.runtime
            .as_ref()
            .map(|r| r.modes().to_vec())
            .unwrap_or_default()
    }
}

impl Dataplane for AfXdpDataplane {
    fn start(
        &mut self,
        config: &DaemonConfig,
        table: &ServiceTableSpec,
        timeouts: &Timeouts,
    ) -> Result<(), String> {
        check_table_memory(config.conn_table_size)?;
        let ifaces = match &config.interfaces {
            Some(Interfaces::OneArm { iface }) => vec![iface.clone()],
            Some(Interfaces::TwoArm { external, internal }) => {
                vec![external.clone(), internal.clone()]
            }
            None => {
                return Err(
                    "no interface: give --iface or daemon.interfaces in the file".to_string(),
                );
            }
        };
        let runtime_config = RuntimeConfig {
            ifaces,
            queues: config.queues,
            cores: config.cores.clone(),
            worker_nice: config.worker_nice,
            max_connections: config.conn_table_size as usize * ENTRIES_PER_BUCKET,
            tunnel_source: config.director_address.and_then(ipv4_of),
            tunnel_source6: config.director_address.and_then(ipv6_of),
            xsk: XskConfig::default(),
            attach: AttachMode::Auto,
            options: xvs_conntrack::Options {
                expire_nodest_conn: config.options.expire_nodest_conn,
                expire_quiescent_template: config.options.expire_quiescent_template,
                sloppy_tcp: config.options.sloppy_tcp,
                ..Default::default()
            },
            timeouts: *timeouts,
            io_ceiling: self.io_ceiling,
            defense: config.defense,
            icmp: config.icmp,
            marks: config.marks.clone(),
        };
        self.first_iface = runtime_config.ifaces[0].clone();
        warn_unmarked(table, &config.marks);
        let runtime = Runtime::start(&runtime_config, table).map_err(|e| e.to_string())?;
        for mode in runtime.modes() {
            tracing::info!(iface = %mode.iface, queue = mode.queue, af_xdp = %mode.copy, xdp = %mode.xdp, "forwarding");
        }
        self.runtime = Some(runtime);
        Ok(())
    }

    fn set_flood_limits(&mut self, config: &DaemonConfig) {
        if let Some(runtime) = &self.runtime {
            runtime.set_defense(config.defense);
            runtime.set_icmp_limits(config.icmp);
        }
    }

    fn check(&self, table: &ServiceTableSpec) -> Result<(), String> {
        check_supported(table).map_err(|e| e.to_string())?;
        if let Some(runtime) = &self.runtime {
            method_changes_are_safe(&runtime.snapshot(), table)?;
        }
        Ok(())
    }

    fn update(&mut self, table: &ServiceTableSpec, timeouts: &Timeouts) {
        let Some(runtime) = self.runtime.as_mut() else {
            return;
        };
        runtime.set_timeouts(*timeouts);
        warn_unmarked(table, runtime.mark_rules());
        if let Err(e) = runtime.update(table) {
            tracing::error!(error = %e, "configuration not applied to the dataplane");
        }
    }

    fn set_mark_rules(&mut self, rules: &[MarkRule]) -> Result<(), String> {
        let Some(runtime) = self.runtime.as_mut() else {
            return Ok(());
        };
        if runtime.mark_rules() == rules {
            return Ok(());
        }
        runtime.set_mark_rules(rules).map_err(|e| e.to_string())?;
        warn_unmarked(runtime.table(), rules);
        Ok(())
    }

    fn fill(&self, what: &ListRequest, data: &mut ListData) {
        let Some(runtime) = self.runtime.as_ref() else {
            return;
        };
        match what {
            ListRequest::Connections => {
                data.connections = connections(runtime);
                return;
            }
            ListRequest::Dataplane => {
                data.dataplane = Some(Box::new(dataplane_info(runtime)));
                data.sync = runtime.sync().map(|s| Box::new(s.status()));
                return;
            }
            ListRequest::Daemon => {
                data.sync = runtime.sync().map(|s| Box::new(s.status()));
                return;
            }
            _ => {}
        }
        let snapshot = runtime.snapshot();
        runtime.with_stats(|stats| {
            for entry in &mut data.services {
                let Some(service) = snapshot.services.iter().find(|s| s.spec.addr == entry.addr)
                else {
                    continue;
                };
                let (totals, rates) = stats.service(&entry.addr);
                entry.stats = totals;
                entry.rates = rates;
                for dest_entry in &mut entry.dests {
                    let found = service.dests.iter().zip(&service.servers).find(|(d, _)| {
                        d.spec.addr == dest_entry.addr && d.spec.port == dest_entry.port
                    });
                    dest_entry.local = runtime.is_local(dest_entry.addr);
                    if let Some((dest, server)) = found {
                        dest_entry.active_conns = server.load.active();
                        dest_entry.inact_conns = server.load.inactive();
                        dest_entry.persist_conns = server.load.persistent();
                        let (totals, rates) = stats.dest(dest.id);
                        dest_entry.stats = totals;
                        dest_entry.rates = rates;
                    }
                }
            }
        });
    }

    fn zero(&mut self, service: Option<&ServiceAddr>) {
        if let Some(runtime) = self.runtime.as_ref() {
            runtime.zero(service);
        }
    }

    fn metrics(&self) -> Option<DataplaneMetrics> {
        self.runtime.as_ref().map(dataplane_metrics)
    }

    fn stop(&mut self) {
        if let Some(mut runtime) = self.runtime.take() {
            runtime.stop();
        }
    }

    fn start_daemon(&mut self, role: Role, args: &DaemonArgs) -> Result<(), String> {
        let sync = self.sync()?;
        sync.start(role, args.settings(&self.first_iface))
            .map_err(|e| e.to_string())
    }

    fn stop_daemon(&mut self, role: Role) -> Result<(), String> {
        self.sync()?.stop_daemon(role).map_err(|e| e.to_string())
    }

    fn configure_sync(&mut self, config: &SyncConfig) -> Result<(), String> {
        let sync = self.sync()?;
        let settings =
            |args: &Option<DaemonArgs>| args.as_ref().map(|a| a.settings(&self.first_iface));
        let options = SyncOptions {
            policy: config.policy,
            resync: config.resync,
            key: config.key.clone(),
            peers: config.peers.clone(),
        };
        sync.configure(settings(&config.master), settings(&config.backup), options)
            .map_err(|e| e.to_string())
    }

    fn conn_table(&self) -> Option<xvs_conntrack::ConnTable> {
        self.runtime.as_ref().map(Runtime::conn_table)
    }

    fn forwarding_health(&self) -> Result<(), String> {
        let runtime = self.runtime.as_ref().ok_or("not started")?;
        let (running, workers) = runtime.workers_running();
        if workers == 0 || running < workers {
            return Err(format!("{running} of {workers} workers running"));
        }
        let mut ifaces: Vec<&str> = runtime.modes().iter().map(|m| m.iface.as_str()).collect();
        ifaces.dedup();
        for iface in ifaces {
            match xvs_dataplane::netdev::link_is_running(iface) {
                Ok(true) => {}
                Ok(false) => return Err(format!("{iface} is down")),
                Err(e) => return Err(format!("{iface}: {e}")),
            }
        }
        Ok(())
    }
}

impl AfXdpDataplane {
    fn sync(&self) -> Result<&SyncControl, String> {
        self.runtime
            .as_ref()
            .and_then(Runtime::sync)
            .ok_or_else(|| "the dataplane is not running".to_string())
    }
}

/// IPVS fixes a connection's forwarding method when the connection is made, so `-e` with a
/// new method leaves existing connections on the old one. xvs's connections follow their real
/// server's current method, so it refuses the change while the server has connections rather
/// than send them the wrong way: quiesce it (`-w 0`), let them finish, then change it.
fn method_changes_are_safe(running: &Snapshot, table: &ServiceTableSpec) -> Result<(), String> {
    for service in &table.services {
        let Some(current) = running
            .services
            .iter()
            .find(|s| s.spec.addr == service.addr)
        else {
            continue;
        };
        for dest in &service.dests {
            let found = current
                .dests
                .iter()
                .zip(&current.servers)
                .find(|(d, _)| d.spec.addr == dest.addr && d.spec.port == dest.port);
            if let Some((old, server)) = found {
                let connections = server.load.total_conns() + server.load.persistent();
                if old.spec.method != dest.method && connections > 0 {
                    return Err(format!(
                        "Real server {} has {connections} connections: set its weight to 0 and let them finish before changing its forwarding method",
                        SocketText(dest.addr, dest.port)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `--dataplane`: the ports' modes and the workers' frame and drop counters.
fn dataplane_info(runtime: &Runtime) -> DataplaneInfo {
    let (frames, umems) = runtime.with_stats(|stats| {
        let umems: Vec<_> = (0..stats.worker_count())
            .map(|w| stats.worker(w).umem)
            .collect();
        (stats.frames(), umems)
    });
    let table = runtime.conn_table();
    let per_worker = umems
        .iter()
        .enumerate()
        .map(|(worker, u)| WorkerInfo {
            worker: worker as u32,
            umem: UmemInfo {
                total: u.total,
                free: u.free,
                kernel: u.kernel,
                in_flight: u.in_flight,
            },
            // One shard per worker, in the same order.
            conn_entries: {
                let s = table.shard_stats(worker as u16);
                s.conns + s.templates
            },
        })
        .collect();
    let stats = table.stats();
    let ports = runtime
        .modes()
        .iter()
        .map(|m| PortInfo {
            iface: m.iface.clone(),
            queue: m.queue,
            af_xdp: m.copy.to_string(),
            xdp: m.xdp.to_string(),
        })
        .collect();
    let mut drops = drop_counts(&frames);
    drops.retain(|(_, n)| *n > 0);
    let (workers_running, workers) = runtime.workers_running();
    DataplaneInfo {
        ports,
        workers_running,
        workers,
        rx_frames: frames.rx,
        tx_frames: frames.tx,
        icmp_sent: frames.icmp_sent,
        local_delivered: frames.local_delivered,
        drops,
        defense: defense_info(runtime),
        conn_entries: stats.conns + stats.templates,
        per_worker,
    }
}

/// The SYN-flood defence's counters and modes.
fn defense_info(runtime: &Runtime) -> DefenseInfo {
    let table = runtime.conn_table();
    let status = table.defense_status();
    let stats = table.stats();
    let syn = runtime.syn_filter_status();
    DefenseInfo {
        evicted: stats.evicted,
        refused: stats.refused,
        drop_entry: status.drop_entry as u8,
        secure_tcp: status.secure_tcp as u8,
        under_pressure: status.under_pressure,
        syn_filter: syn.mode as u8,
        unproven_syns_per_sec: syn.unproven_per_sec,
        syn_dropped: syn.counts.dropped,
        syn_sources_proven: syn.counts.proven,
        syn_passed: syn.counts.passed,
    }
}

/// Every drop reason with its count, zeros included: the pipeline's reasons (less
/// `refused`, which the forwarders' reasons break down), the forwarders', and the frame
/// I/O's own losses; so each dropped frame is counted once.
fn drop_counts(frames: &FrameCounters) -> Vec<(String, u64)> {
    let mut drops: Vec<(String, u64)> = Drop::ALL
        .iter()
        .filter(|&&why| why != Drop::Refused)
        .map(|&why| (why.name().to_string(), frames.drops[why as usize]))
        .collect();
    drops.extend(
        Reason::ALL
            .iter()
            .map(|&r| (r.name().to_string(), frames.refused[r as usize])),
    );
    // The frame I/O's own losses: a full receive ring (the kernel's count), a full
    // transmit ring, and what should never happen.
    drops.extend([
        ("rx_ring_full".to_string(), frames.rx_ring_full),
        ("tx_ring_full".to_string(), frames.tx_ring_full),
        ("bad_verdict".to_string(), frames.bad_verdict),
        ("invalid_descriptor".to_string(), frames.invalid_descs),
    ]);
    drops
}

/// The metrics endpoint's view: director totals, each worker and port, every drop reason,
/// the connection table's fill and the sync counters. Reads counters only.
fn dataplane_metrics(runtime: &Runtime) -> DataplaneMetrics {
    let (totals, frames, per_worker) = runtime.with_stats(|stats| {
        let per_worker: Vec<_> = (0..stats.worker_count()).map(|w| stats.worker(w)).collect();
        (stats.total().0, stats.frames(), per_worker)
    });
    let running = runtime.worker_states();
    let workers = per_worker
        .iter()
        .enumerate()
        .map(|(queue, w)| WorkerMetrics {
            queue: queue as u32,
            running: running.get(queue).copied().unwrap_or(false),
            rx_frames: w.frames.rx,
            tx_frames: w.frames.tx,
            icmp_sent: w.frames.icmp_sent,
            rx_batches: w.rx_batches,
            umem_free: w.umem.free,
            umem_kernel: w.umem.kernel,
            umem_in_flight: w.umem.in_flight,
        })
        .collect();
    // Ports are listed queue by queue, each queue's interfaces in port order.
    let ifaces = runtime
        .modes()
        .iter()
        .filter(|m| m.queue == 0)
        .count()
        .max(1);
    let ports = runtime
        .modes()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let losses = per_worker
                .get(m.queue as usize)
                .and_then(|w| w.ports.get(i % ifaces))
                .copied()
                .unwrap_or_default();
            PortMetrics {
                iface: m.iface.clone(),
                queue: m.queue,
                af_xdp: m.copy.to_string(),
                xdp: m.xdp.to_string(),
                rx_ring_full: losses.rx_ring_full,
                tx_ring_full: losses.tx_ring_full,
                bad_verdict: losses.bad_verdict,
                invalid_descs: losses.invalid_descs,
            }
        })
        .collect();
    let table = runtime.conn_table_use();
    DataplaneMetrics {
        totals,
        workers,
        ports,
        drops: drop_counts(&frames),
        conn_table: ConnTableMetrics {
            capacity: table.capacity,
            connections: table.stats.conns,
            templates: table.stats.templates,
            refused: table.stats.refused,
            expired: table.stats.expired,
        },
        defense: {
            let d = defense_info(runtime);
            DefenseMetrics {
                evicted: d.evicted,
                drop_entry: d.drop_entry,
                secure_tcp: d.secure_tcp,
                under_pressure: d.under_pressure,
                syn_filter: d.syn_filter,
                syn_dropped: d.syn_dropped,
                syn_sources_proven: d.syn_sources_proven,
            }
        },
        sync: runtime.sync().map(SyncControl::status),
    }
}

/// `-c`: every connection and template, as `/proc/net/ip_vs_conn` would list them.
fn connections(runtime: &Runtime) -> Vec<ConnEntry> {
    let mut entries: Vec<ConnEntry> = runtime
        .connections()
        .into_iter()
        .map(|(c, expire_secs)| {
            let protocol = match c.proto {
                Some(ConnProtocol::Tcp) => "TCP",
                Some(ConnProtocol::Udp) => "UDP",
                Some(ConnProtocol::Icmp) => "ICMP",
                None => "IP",
            };
            // IPVS names TCP states; UDP and ICMP entries show their protocol as the state.
            let state = match c.proto {
                Some(ConnProtocol::Tcp) | None => c.state.name().to_string(),
                Some(_) => protocol.to_string(),
            };
            ConnEntry {
                protocol: protocol.to_string(),
                expire_secs,
                state,
                client: (ip(c.client.addr), c.client.port),
                virtual_addr: (ip(c.vip.addr), c.vip.port),
                dest: (ip(c.dest_addr.addr), c.dest_addr.port),
                pe: None,
            }
        })
        .collect();
    entries.sort_by_key(|a| (a.virtual_addr, a.client));
    entries
}

fn ip(addr: xvs_conntrack::Addr) -> IpAddr {
    addr.to_ip()
}
