//! What a scrape says: metric names, HELP texts and labels, in Prometheus's text format.
//!
//! First node_exporter's IPVS collector (`collector/ipvs_linux.go`), name for name, HELP
//! for HELP and label for label, so the Grafana dashboards and alerts written for kernel
//! IPVS directors work on xvs unchanged:
//!
//! - `node_ipvs_connections_total`, `node_ipvs_incoming_packets_total`,
//!   `node_ipvs_outgoing_packets_total`, `node_ipvs_incoming_bytes_total`,
//!   `node_ipvs_outgoing_bytes_total`: the director's totals (`/proc/net/ip_vs_stats`);
//! - `node_ipvs_backend_connections_active`, `node_ipvs_backend_connections_inactive`,
//!   `node_ipvs_backend_weight`: one series per real server of each service, labelled
//!   `local_address`, `local_port`, `remote_address`, `remote_port`, `proto` (`TCP`, `UDP`,
//!   `FWM`) and `local_mark` (the mark in `/proc/net/ip_vs`'s `%08X`, `""` for address
//!   services; fwmark services have `local_address` `""` and `local_port` `0`).
//!
//! Then xvs's own, prefixed `xvs_`: the `--stats` counters per service and per real server
//! (the kernel keeps them too, node_exporter does not read them), the workers' frames, the
//! drops by reason, the AF_XDP ports' losses, the connection table's fill, the sync
//! daemons' counters and, once health checks report, each real server's health.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use xvs_dataplane::service::spec::ServiceAddr;

use super::{DataplaneMetrics, Scrape};
use crate::listing::Stats;

/// The `Content-Type` of what [`render`] writes (Prometheus text format 0.0.4, as
/// node_exporter serves it).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;

/// The text of one scrape.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ScrapeCollector(scrape)));
    let mut text = String::new();
    // Writing into a String cannot fail; the encoder's only errors are the writer's.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// A [`Scrape`] as a prometheus-client collector: every family is encoded from it.
#[derive(Debug)]
struct ScrapeCollector(Scrape);

/// node_exporter's labels of a virtual service: address, port, protocol, mark.
fn service_labels(addr: &ServiceAddr) -> [(&'static str, String); 4] {
    let (local_address, local_port, proto, local_mark) = match *addr {
        ServiceAddr::Inet {
            protocol,
            addr,
            port,
        } => (
            addr.to_string(),
            port.to_string(),
            protocol.label(),
            String::new(),
        ),
        ServiceAddr::Fwmark { mark, .. } => {
            (String::new(), "0".to_string(), "FWM", format!("{mark:08X}"))
        }
    };
    [
        ("local_address", local_address),
        ("local_port", local_port),
        ("proto", proto.to_string()),
        ("local_mark", local_mark),
    ]
}

/// node_exporter's labels of a real server, in its order: local_address, local_port,
/// remote_address, remote_port, proto, local_mark.
fn backend_labels(service: &ServiceAddr, addr: std::net::IpAddr, port: u16) -> Labels {
    let [local_address, local_port, proto, local_mark] = service_labels(service);
    vec![
        local_address,
        local_port,
        ("remote_address", addr.to_string()),
        ("remote_port", port.to_string()),
        proto,
        local_mark,
    ]
}

/// Writes one family of counters or gauges; a family without series is left out, as the
/// Go client leaves it out.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: Vec<(L, u64)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in &series {
        let sample = metric.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
            _ => ConstGauge::new(*value).encode(sample)?,
        }
    }
    Ok(())
}

/// A family of one unlabelled series.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(value).encode(metric),
    }
}

/// The five `--stats` columns: (name part, what it counts).
const STATS_COLUMNS: [(&str, &str); 5] = [
    ("connections", "connections scheduled"),
    ("incoming_packets", "packets client to real server"),
    (
        "outgoing_packets",
        "packets real server to client (NAT only)",
    ),
    ("incoming_bytes", "bytes client to real server"),
    ("outgoing_bytes", "bytes real server to client (NAT only)"),
];

/// The values of [`STATS_COLUMNS`].
fn stats_values(s: &Stats) -> [u64; 5] {
    [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes]
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let scrape = &self.0;
        node_exporter_ipvs(&mut encoder, scrape)?;
        xvs_services(&mut encoder, scrape)?;
        xvs_health(&mut encoder, scrape)?;
        if let Some(announce) = &scrape.announce {
            xvs_announce(&mut encoder, announce)?;
        }
        if let Some(dataplane) = &scrape.dataplane {
            xvs_dataplane(&mut encoder, dataplane)?;
            xvs_defense(&mut encoder, dataplane)?;
            xvs_sync(&mut encoder, dataplane)?;
        }
        Ok(())
    }
}

/// node_exporter's IPVS collector, with its HELP texts.
fn node_exporter_ipvs(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> fmt::Result {
    let totals = match &scrape.dataplane {
        Some(d) => d.totals,
        // Nothing forwards, nothing is counted: the services' (zero) sums.
        None => scrape.services.iter().fold(Stats::default(), |mut a, s| {
            a.add(&s.stats);
            a
        }),
    };
    let counter = MetricType::Counter;
    let help = [
        (
            "node_ipvs_connections",
            "The total number of connections made.",
        ),
        (
            "node_ipvs_incoming_packets",
            "The total number of incoming packets.",
        ),
        (
            "node_ipvs_outgoing_packets",
            "The total number of outgoing packets.",
        ),
        (
            "node_ipvs_incoming_bytes",
            "The total amount of incoming data.",
        ),
        (
            "node_ipvs_outgoing_bytes",
            "The total amount of outgoing data.",
        ),
    ];
    for ((name, help), value) in help.iter().zip(stats_values(&totals)) {
        single(encoder, name, help, counter, value)?;
    }

    let per_backend = |value: fn(&crate::listing::DestEntry) -> u64| -> Vec<(Labels, u64)> {
        scrape
            .services
            .iter()
            .flat_map(|s| {
                s.dests
                    .iter()
                    .map(move |d| (backend_labels(&s.addr, d.addr, d.port), value(d)))
            })
            .collect()
    };
    let gauge = MetricType::Gauge;
    family(
        encoder,
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address.",
        gauge,
        per_backend(|d| u64::from(d.active_conns)),
    )?;
    family(
        encoder,
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address.",
        gauge,
        per_backend(|d| u64::from(d.inact_conns)),
    )?;
    family(
        encoder,
        "node_ipvs_backend_weight",
        "The current backend weight by local and remote address.",
        gauge,
        per_backend(|d| u64::from(d.weight)),
    )
}

/// `--stats` per service and per real server, and PersistConn.
fn xvs_services(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> fmt::Result {
    for (column, (part, what)) in STATS_COLUMNS.iter().enumerate() {
        let series = scrape
            .services
            .iter()
            .map(|s| (service_labels(&s.addr), stats_values(&s.stats)[column]))
            .collect();
        family(
            encoder,
            &format!("xvs_service_{part}"),
            &format!("Virtual service: {what} since it was added or zeroed (xvsadm -L --stats)."),
            MetricType::Counter,
            series,
        )?;
    }
    for (column, (part, what)) in STATS_COLUMNS.iter().enumerate() {
        let series = scrape
            .services
            .iter()
            .flat_map(|s| {
                s.dests.iter().map(move |d| {
                    (
                        backend_labels(&s.addr, d.addr, d.port),
                        stats_values(&d.stats)[column],
                    )
                })
            })
            .collect();
        family(
            encoder,
            &format!("xvs_backend_{part}"),
            &format!("Real server: {what} since it was added or zeroed (xvsadm -L --stats)."),
            MetricType::Counter,
            series,
        )?;
    }
    let persistent = scrape
        .services
        .iter()
        .flat_map(|s| {
            s.dests.iter().map(move |d| {
                (
                    backend_labels(&s.addr, d.addr, d.port),
                    u64::from(d.persist_conns),
                )
            })
        })
        .collect();
    family(
        encoder,
        "xvs_backend_persistent_connections",
        "Persistence templates pointing at the real server (PersistConn).",
        MetricType::Gauge,
        persistent,
    )
}

/// Health checks' verdicts: 1 up, 0 down (only real servers a checker reports on).
fn xvs_health(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> fmt::Result {
    let series = scrape
        .health
        .iter()
        .map(|h| (backend_labels(&h.service, h.addr, h.port), u64::from(h.up)))
        .collect();
    family(
        encoder,
        "xvs_backend_up",
        "Whether the real server passed its health checks (1) or not (0).",
        MetricType::Gauge,
        series,
    )
}

/// Scale-out: which VIPs this director announces (holds on its announce device) and
/// whether it is drained.
fn xvs_announce(encoder: &mut DescriptorEncoder, a: &super::AnnounceMetrics) -> fmt::Result {
    let series = a
        .vips
        .iter()
        .map(|(vip, held)| ([("vip", vip.to_string())], u64::from(*held)))
        .collect();
    family(
        encoder,
        "xvs_vip_announced",
        "Whether the VIP is on the announce device, for the BGP daemon to announce (1) or not (0).",
        MetricType::Gauge,
        series,
    )?;
    single(
        encoder,
        "xvs_drained",
        "Whether the director is drained (xvs drain): it announces no VIP.",
        MetricType::Gauge,
        u64::from(a.drained),
    )
}

fn worker_label(queue: u32) -> [(&'static str, String); 1] {
    [("worker", queue.to_string())]
}

/// Workers, ports, drops and the connection table.
fn xvs_dataplane(encoder: &mut DescriptorEncoder, d: &DataplaneMetrics) -> fmt::Result {
    let counter = MetricType::Counter;
    let gauge = MetricType::Gauge;
    let workers = |value: fn(&super::WorkerMetrics) -> u64| {
        d.workers
            .iter()
            .map(|w| (worker_label(w.queue), value(w)))
            .collect::<Vec<_>>()
    };
    family(
        encoder,
        "xvs_worker_up",
        "Whether the worker thread of the queue runs (a stopped worker's queue falls to the kernel).",
        gauge,
        workers(|w| u64::from(w.running)),
    )?;
    family(
        encoder,
        "xvs_worker_rx_frames",
        "Frames the worker received from its AF_XDP sockets.",
        counter,
        workers(|w| w.rx_frames),
    )?;
    family(
        encoder,
        "xvs_worker_tx_frames",
        "Frames the worker sent on.",
        counter,
        workers(|w| w.tx_frames),
    )?;
    family(
        encoder,
        "xvs_worker_icmp_sent",
        "ICMP errors the worker sent back (fragmentation needed, time exceeded).",
        counter,
        workers(|w| w.icmp_sent),
    )?;
    let batches: Vec<_> = d
        .workers
        .iter()
        .flat_map(|w| {
            w.rx_batches.iter().enumerate().map(|(k, n)| {
                let labels = vec![
                    ("worker", w.queue.to_string()),
                    ("frames_le", (1u32 << k).to_string()),
                ];
                (labels, *n)
            })
        })
        .collect();
    let frames: Vec<_> = d
        .workers
        .iter()
        .flat_map(|w| {
            [
                ("free", w.umem_free),
                ("kernel", w.umem_kernel),
                ("in_flight", w.umem_in_flight),
            ]
            .map(|(state, n)| {
                let labels = vec![
                    ("worker", w.queue.to_string()),
                    ("state", state.to_string()),
                ];
                (labels, u64::from(n))
            })
        })
        .collect();
    family(
        encoder,
        "xvs_worker_umem_frames",
        "UMEM frames of the worker by where they are: free (its free list), kernel (fill ring, or transmitted and not completed), in_flight (held in a batch); their sum is the UMEM's size unless a frame leaked.",
        gauge,
        frames,
    )?;
    family(
        encoder,
        "xvs_worker_rx_batches",
        "Receive batches of the worker by size: frames_le=N counts batches of more than N/2 and at most N frames (full batches of 64 mean a saturated worker).",
        counter,
        batches,
    )?;

    if !d.ports.is_empty() {
        let mut info = encoder.encode_descriptor(
            "xvs_port",
            "AF_XDP port of an interface's queue: af_xdp copy or zero-copy, xdp drv (native) or skb (generic).",
            None,
            MetricType::Info,
        )?;
        for p in &d.ports {
            info.encode_info(&[
                ("iface", p.iface.clone()),
                ("queue", p.queue.to_string()),
                ("af_xdp", p.af_xdp.clone()),
                ("xdp", p.xdp.clone()),
            ])?;
        }
    }
    let ports = |value: fn(&super::PortMetrics) -> u64| {
        d.ports
            .iter()
            .map(|p| {
                (
                    [("iface", p.iface.clone()), ("queue", p.queue.to_string())],
                    value(p),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        encoder,
        "xvs_port_rx_ring_full",
        "Frames the kernel dropped before the AF_XDP receive ring: it was full or had no \
         free frame, so the worker fell behind (XDP_STATISTICS rx_ring_full + rx_dropped).",
        counter,
        ports(|p| p.rx_ring_full),
    )?;
    family(
        encoder,
        "xvs_port_tx_ring_full",
        "Frames dropped because the AF_XDP transmit ring was full.",
        counter,
        ports(|p| p.tx_ring_full),
    )?;
    family(
        encoder,
        "xvs_port_bad_verdict",
        "Frames whose verdict named a port that does not exist (a bug if not 0).",
        counter,
        ports(|p| p.bad_verdict),
    )?;
    family(
        encoder,
        "xvs_port_invalid_descriptors",
        "Descriptors the kernel returned that xvs had not handed it (a bug if not 0).",
        counter,
        ports(|p| p.invalid_descs),
    )?;

    let drops = d
        .drops
        .iter()
        .map(|(reason, n)| ([("reason", reason.clone())], *n))
        .collect();
    family(
        encoder,
        "xvs_drops",
        "Frames dropped, by reason (the reasons of xvsadm --dataplane; each frame counted once).",
        counter,
        drops,
    )?;

    let t = &d.conn_table;
    single(
        encoder,
        "xvs_conntrack_entries",
        "Entries in the connection table: connections and persistence templates.",
        gauge,
        t.connections + t.templates,
    )?;
    single(
        encoder,
        "xvs_conntrack_templates",
        "Persistence templates in the connection table (included in xvs_conntrack_entries).",
        gauge,
        t.templates,
    )?;
    single(
        encoder,
        "xvs_conntrack_capacity",
        "Entries the connection table holds at most (daemon.conn_table_size times 64).",
        gauge,
        t.capacity,
    )?;
    single(
        encoder,
        "xvs_conntrack_refused",
        "New connections and templates refused because the connection table was full.",
        counter,
        t.refused,
    )?;
    single(
        encoder,
        "xvs_conntrack_expired",
        "Connection table entries removed by their timer.",
        counter,
        t.expired,
    )
}

/// The connection table's SYN-flood defence.
fn xvs_defense(encoder: &mut DescriptorEncoder, d: &DataplaneMetrics) -> fmt::Result {
    let f = &d.defense;
    single(
        encoder,
        "xvs_conntrack_evicted",
        "Half-open connections evicted from the connection table to make room for new ones (defense.drop_entry).",
        MetricType::Counter,
        f.evicted,
    )?;
    single(
        encoder,
        "xvs_defense_drop_entry",
        "The drop_entry defence's mode now: 0 off, 1 automatic, 2 automatic and in force, 3 always.",
        MetricType::Gauge,
        u64::from(f.drop_entry),
    )?;
    single(
        encoder,
        "xvs_defense_secure_tcp",
        "The secure_tcp defence's mode now: 0 off, 1 automatic, 2 automatic and in force, 3 always.",
        MetricType::Gauge,
        u64::from(f.secure_tcp),
    )?;
    single(
        encoder,
        "xvs_defense_under_pressure",
        "1 while the connection table is above its pressure line (defense.pressure_percent).",
        MetricType::Gauge,
        u64::from(f.under_pressure),
    )?;
    single(
        encoder,
        "xvs_defense_syn_filter",
        "The XDP SYN filter's mode now: 0 off, 1 automatic, 2 automatic and in force, 3 always.",
        MetricType::Gauge,
        u64::from(f.syn_filter),
    )?;
    single(
        encoder,
        "xvs_defense_syn_filter_dropped",
        "SYNs the XDP SYN filter dropped because their source had not proven real.",
        MetricType::Counter,
        f.syn_dropped,
    )?;
    single(
        encoder,
        "xvs_defense_syn_filter_sources_proven",
        "Sources the XDP SYN filter saw prove real by retransmitting a SYN it dropped.",
        MetricType::Counter,
        f.syn_sources_proven,
    )
}

/// The connection sync daemons.
fn xvs_sync(encoder: &mut DescriptorEncoder, d: &DataplaneMetrics) -> fmt::Result {
    let Some(s) = &d.sync else {
        return Ok(());
    };
    let counter = MetricType::Counter;
    let role = |r: &str| [("role", r.to_string())];
    family(
        encoder,
        "xvs_sync_daemon_running",
        "Whether the connection sync daemon of the role runs.",
        MetricType::Gauge,
        vec![
            (role("master"), u64::from(s.master.is_some())),
            (role("backup"), u64::from(s.backup.is_some())),
        ],
    )?;
    let direction = |d: &str| [("direction", d.to_string())];
    family(
        encoder,
        "xvs_sync_messages",
        "Sync messages sent (master) and received (backup).",
        counter,
        vec![
            (direction("sent"), s.messages_sent),
            (direction("received"), s.messages_received),
        ],
    )?;
    family(
        encoder,
        "xvs_sync_connections",
        "Connections carried in sync messages sent and received.",
        counter,
        vec![
            (direction("sent"), s.conns_sent),
            (direction("received"), s.conns_received),
        ],
    )?;
    let singles = [
        (
            "xvs_sync_send_errors",
            "Sync messages the socket refused to send.",
            s.send_errors,
        ),
        (
            "xvs_sync_queue_dropped",
            "Connections the workers could not queue for sending (queue full).",
            s.queue_dropped,
        ),
        (
            "xvs_sync_installed",
            "Received connections and templates installed in the connection table.",
            s.installed,
        ),
        (
            "xvs_sync_install_failed",
            "Received connections refused by a full connection table.",
            s.install_failed,
        ),
        (
            "xvs_sync_resync_entries_sent",
            "Entries streamed to restarting backups (bulk resync).",
            s.resync_entries_sent,
        ),
        (
            "xvs_sync_resyncs_completed",
            "Bulk resyncs this director completed as a backup.",
            s.resyncs_completed,
        ),
    ];
    for (name, help, value) in singles {
        single(encoder, name, help, counter, value)?;
    }
    family(
        encoder,
        "xvs_sync_resync_requests",
        "Bulk resync requests sent (as a backup) and served (as a master).",
        counter,
        vec![
            (direction("sent"), s.resync_requests_sent),
            (direction("served"), s.resync_requests_served),
        ],
    )?;
    let rejected = s
        .rejected
        .iter()
        .map(|(reason, n)| ([("reason", reason.clone())], *n))
        .collect();
    family(
        encoder,
        "xvs_sync_rejected",
        "Received sync messages and entries refused, by reason (only reasons seen).",
        counter,
        rejected,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{DestEntry, ServiceEntry};
    use crate::metrics::{
        BackendHealth, ConnTableMetrics, DefenseMetrics, PortMetrics, WorkerMetrics,
    };
    use xvs_dataplane::service::spec::{DestSpec, ForwardMethod, Protocol, ServiceSpec};

    fn service(addr: ServiceAddr, rips: &[(&str, u16, u32)]) -> ServiceEntry {
        let mut entry = ServiceEntry::from_spec(&ServiceSpec::new(addr));
        for &(rip, port, weight) in rips {
            entry.dests.push(DestEntry::from_spec(&DestSpec {
                addr: rip.parse().unwrap(),
                port,
                method: ForwardMethod::Route,
                weight,
                upper_threshold: 0,
                lower_threshold: 0,
            }));
        }
        entry
    }

    fn vip80() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: "172.16.21.10".parse().unwrap(),
            port: 80,
        }
    }

    /// The sample lines of `text` (no comments).
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn node_exporter_names_help_and_labels() {
        let mut s = service(vip80(), &[("192.168.40.12", 80, 2)]);
        s.dests[0].active_conns = 3;
        s.dests[0].inact_conns = 4;
        let fwm = service(
            ServiceAddr::Fwmark {
                mark: 10,
                ipv6: false,
            },
            &[("10.0.0.1", 443, 1)],
        );
        let scrape = Scrape {
            services: vec![s, fwm],
            dataplane: Some(DataplaneMetrics {
                totals: Stats {
                    conns: 20,
                    in_pkts: 135,
                    out_pkts: 0,
                    in_bytes: 8716,
                    out_bytes: 0,
                },
                ..Default::default()
            }),
            health: Vec::new(),
            announce: None,
        };
        let text = render(scrape);
        for line in [
            "# HELP node_ipvs_connections_total The total number of connections made.",
            "# TYPE node_ipvs_connections_total counter",
            "node_ipvs_connections_total 20",
            "node_ipvs_incoming_packets_total 135",
            "node_ipvs_incoming_bytes_total 8716",
            "node_ipvs_outgoing_bytes_total 0",
            "# HELP node_ipvs_backend_connections_active The current active connections by local and remote address.",
            "# TYPE node_ipvs_backend_connections_active gauge",
            "node_ipvs_backend_connections_active{local_address=\"172.16.21.10\",local_port=\"80\",remote_address=\"192.168.40.12\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"} 3",
            "node_ipvs_backend_connections_inactive{local_address=\"172.16.21.10\",local_port=\"80\",remote_address=\"192.168.40.12\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"} 4",
            "node_ipvs_backend_weight{local_address=\"172.16.21.10\",local_port=\"80\",remote_address=\"192.168.40.12\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"} 2",
            // As /proc/net/ip_vs shows a fwmark service and procfs reads it.
            "node_ipvs_backend_weight{local_address=\"\",local_port=\"0\",remote_address=\"10.0.0.1\",remote_port=\"443\",proto=\"FWM\",local_mark=\"0000000A\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("xvs_backend_up"),
            "no health family without health reports"
        );
    }

    #[test]
    fn xvs_own_families() {
        let mut s = service(vip80(), &[("192.168.40.12", 80, 1)]);
        s.stats.conns = 7;
        s.dests[0].stats.in_bytes = 99;
        s.dests[0].persist_conns = 1;
        let scrape = Scrape {
            services: vec![s],
            dataplane: Some(DataplaneMetrics {
                workers: vec![WorkerMetrics {
                    queue: 0,
                    running: true,
                    rx_frames: 52,
                    tx_frames: 51,
                    icmp_sent: 0,
                    rx_batches: [3, 0, 1, 0, 0, 0, 2],
                    umem_free: 2040,
                    umem_kernel: 2056,
                    umem_in_flight: 0,
                }],
                ports: vec![PortMetrics {
                    iface: "eth0".into(),
                    queue: 0,
                    af_xdp: "copy".into(),
                    xdp: "drv".into(),
                    rx_ring_full: 7,
                    tx_ring_full: 2,
                    ..Default::default()
                }],
                drops: vec![
                    ("no_connection".into(), 0),
                    ("neighbour_unresolved".into(), 1),
                ],
                conn_table: ConnTableMetrics {
                    capacity: 262_144,
                    connections: 5,
                    templates: 1,
                    refused: 0,
                    expired: 9,
                },
                ..Default::default()
            }),
            health: vec![BackendHealth {
                service: vip80(),
                addr: "192.168.40.12".parse().unwrap(),
                port: 80,
                up: false,
            }],
            announce: Some(super::super::AnnounceMetrics {
                drained: false,
                vips: vec![
                    ("172.16.21.10".parse().unwrap(), true),
                    ("172.16.21.11".parse().unwrap(), false),
                ],
            }),
        };
        let text = render(scrape);
        let lines = samples(&text);
        let backend = "local_address=\"172.16.21.10\",local_port=\"80\",remote_address=\"192.168.40.12\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"";
        for line in [
            "xvs_service_connections_total{local_address=\"172.16.21.10\",local_port=\"80\",proto=\"TCP\",local_mark=\"\"} 7".to_string(),
            format!("xvs_backend_incoming_bytes_total{{{backend}}} 99"),
            format!("xvs_backend_persistent_connections{{{backend}}} 1"),
            format!("xvs_backend_up{{{backend}}} 0"),
            "xvs_worker_up{worker=\"0\"} 1".to_string(),
            "xvs_worker_rx_frames_total{worker=\"0\"} 52".to_string(),
            "xvs_worker_tx_frames_total{worker=\"0\"} 51".to_string(),
            "xvs_worker_rx_batches_total{worker=\"0\",frames_le=\"1\"} 3".to_string(),
            "xvs_worker_rx_batches_total{worker=\"0\",frames_le=\"4\"} 1".to_string(),
            "xvs_worker_rx_batches_total{worker=\"0\",frames_le=\"64\"} 2".to_string(),
            "xvs_worker_umem_frames{worker=\"0\",state=\"free\"} 2040".to_string(),
            "xvs_worker_umem_frames{worker=\"0\",state=\"kernel\"} 2056".to_string(),
            "xvs_worker_umem_frames{worker=\"0\",state=\"in_flight\"} 0".to_string(),
            "xvs_port_info{iface=\"eth0\",queue=\"0\",af_xdp=\"copy\",xdp=\"drv\"} 1".to_string(),
            "xvs_port_rx_ring_full_total{iface=\"eth0\",queue=\"0\"} 7".to_string(),
            "xvs_port_tx_ring_full_total{iface=\"eth0\",queue=\"0\"} 2".to_string(),
            "xvs_drops_total{reason=\"no_connection\"} 0".to_string(),
            "xvs_drops_total{reason=\"neighbour_unresolved\"} 1".to_string(),
            "xvs_conntrack_entries 6".to_string(),
            "xvs_conntrack_capacity 262144".to_string(),
            "xvs_conntrack_expired_total 9".to_string(),
            "xvs_vip_announced{vip=\"172.16.21.10\"} 1".to_string(),
            "xvs_vip_announced{vip=\"172.16.21.11\"} 0".to_string(),
            "xvs_drained 0".to_string(),
        ] {
            assert!(lines.contains(&line.as_str()), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("xvs_sync_"), "no sync families without sync");
    }

    #[test]
    fn the_defence_exports_its_evictions_and_modes() {
        let text = render(Scrape {
            services: Vec::new(),
            dataplane: Some(DataplaneMetrics {
                defense: DefenseMetrics {
                    evicted: 12345,
                    drop_entry: 2,
                    secure_tcp: 1,
                    under_pressure: true,
                    syn_filter: 2,
                    syn_dropped: 777,
                    syn_sources_proven: 3,
                },
                ..Default::default()
            }),
            health: Vec::new(),
            announce: None,
        });
        let lines = samples(&text);
        for line in [
            "xvs_conntrack_evicted_total 12345",
            "xvs_defense_drop_entry 2",
            "xvs_defense_secure_tcp 1",
            "xvs_defense_under_pressure 1",
            "xvs_defense_syn_filter 2",
            "xvs_defense_syn_filter_dropped_total 777",
            "xvs_defense_syn_filter_sources_proven_total 3",
        ] {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn without_a_dataplane_only_the_listing_is_exported() {
        let mut s = service(vip80(), &[("192.168.40.12", 80, 1)]);
        s.stats.conns = 0;
        let text = render(Scrape {
            services: vec![s],
            dataplane: None,
            health: Vec::new(),
            announce: None,
        });
        assert!(text.contains("\nnode_ipvs_connections_total 0\n"), "{text}");
        assert!(text.contains("node_ipvs_backend_weight{"), "{text}");
        assert!(!text.contains("xvs_worker"), "{text}");
        assert!(
            !text.contains("xvs_vip_announced"),
            "no [announce], no family"
        );
    }
}
