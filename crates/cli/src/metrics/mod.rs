//! The Prometheus endpoint: `[metrics] listen = "ADDR:PORT"` (off by default) serves
//! `GET /metrics` in Prometheus's text format from a thread of its own.
//!
//! A scrape reads one [`Scrape`]: the listing `xvsadm -L -n --stats` prints (services, real
//! servers, counters, ActiveConn/InActConn, weights) and the dataplane's own numbers
//! ([`DataplaneMetrics`]), taken together under the daemon's director lock, which is held
//! only while they are copied (the same work as one `xvsadm -L`); the text is written after
//! the lock is released. Workers never see a scrape: they only ever add to their own
//! counters.
//!
//! | module | concept |
//! |---|---|
//! | [`exposition`] | metric names, HELP texts and labels: node_exporter's IPVS collector, then xvs's own |
//! | [`server`] | the HTTP endpoint and its thread |

pub mod exposition;
pub mod server;

use serde::Serialize;
use xvs_dataplane::sync::SyncStatus;

use crate::listing::{ServiceEntry, Stats};

pub use server::MetricsServer;

/// Everything one scrape shows, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scrape {
    /// The services and real servers as `xvsadm -L -n --stats` lists them.
    pub services: Vec<ServiceEntry>,
    /// The dataplane's own numbers; `None` when the daemon forwards nothing
    /// (`--control-only`).
    pub dataplane: Option<DataplaneMetrics>,
    /// Real-server health as the health checker last saw it. Nothing fills it yet: health
    /// checks are being built beside this; their checker adds one entry per checked real
    /// server, and `xvs_backend_up` appears for those.
    pub health: Vec<BackendHealth>,
    /// Scale-out's VIP announcement, when `[announce]` is configured.
    pub announce: Option<AnnounceMetrics>,
}

/// What the VIP announcer does now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnnounceMetrics {
    /// `xvs drain` (or `drain = true`) holds every VIP back.
    pub drained: bool,
    /// Each IPv4 VIP of the services, and whether it is on the announce device now.
    pub vips: Vec<(std::net::Ipv4Addr, bool)>,
}

/// The dataplane's numbers beyond the listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataplaneMetrics {
    /// The whole director's counters since start or the last `-Z` (IPVS's
    /// `/proc/net/ip_vs_stats`): unlike the sum of the services they keep what removed
    /// services counted.
    pub totals: Stats,
    /// One entry per worker, in queue order.
    pub workers: Vec<WorkerMetrics>,
    /// One entry per AF_XDP port (interface, queue).
    pub ports: Vec<PortMetrics>,
    /// Every drop reason with its count, zeros included, in a fixed order (the names of
    /// `xvsadm --dataplane`).
    pub drops: Vec<(String, u64)>,
    /// The connection table.
    pub conn_table: ConnTableMetrics,
    /// Its SYN-flood defence.
    pub defense: DefenseMetrics,
    /// The connection sync daemons and their counters, when the dataplane runs sync.
    pub sync: Option<SyncStatus>,
}

/// One worker thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerMetrics {
    /// Its queue (worker `n` serves queue `n` of every interface).
    pub queue: u32,
    /// Whether it still runs.
    pub running: bool,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent on.
    pub tx_frames: u64,
    /// ICMP errors sent back to senders.
    pub icmp_sent: u64,
    /// Receive batches by size: batches of at most 1, 2, 4 ... 64 frames (each bucket
    /// counts those above the previous bound).
    pub rx_batches: [u64; xvs_dataplane::pipeline::counters::RX_BATCH_BUCKETS],
    /// Its UMEM frames in its free list.
    pub umem_free: u32,
    /// Its UMEM frames on the kernel's rings (fill ring, transmitted and not completed).
    pub umem_kernel: u32,
    /// Its UMEM frames held in a batch.
    pub umem_in_flight: u32,
}

/// One AF_XDP port: an interface's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PortMetrics {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// `copy` or `zero-copy`.
    pub af_xdp: String,
    /// `drv` or `skb`.
    pub xdp: String,
    /// Frames the kernel dropped before the AF_XDP receive ring (full, or no free frame).
    pub rx_ring_full: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_ring_full: u64,
    /// Frames whose verdict named a port that does not exist.
    pub bad_verdict: u64,
    /// Descriptors the kernel returned that xvs had not handed it.
    pub invalid_descs: u64,
}

/// The connection table's fill and lifetime counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnTableMetrics {
    /// Entries it holds at most (connections and templates together).
    pub capacity: u64,
    /// Live connections.
    pub connections: u64,
    /// Live persistence templates.
    pub templates: u64,
    /// New connections and templates refused because the table was full.
    pub refused: u64,
    /// Entries removed by their timer.
    pub expired: u64,
}

/// The SYN-flood defence of the connection table (`[defense]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DefenseMetrics {
    /// Half-open connections evicted for new entries (`drop_entry`).
    pub evicted: u64,
    /// `drop_entry`'s mode now, IPVS's 0-3 (2: automatic and in force).
    pub drop_entry: u8,
    /// `secure_tcp`'s mode now.
    pub secure_tcp: u8,
    /// The table is above its pressure line.
    pub under_pressure: bool,
    /// The XDP SYN filter's mode now (`defense.syn_filter`).
    pub syn_filter: u8,
    /// SYNs the SYN filter dropped.
    pub syn_dropped: u64,
    /// Sources the SYN filter saw proven real.
    pub syn_sources_proven: u64,
}

/// One real server's health, as a health checker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendHealth {
    /// The virtual service.
    pub service: xvs_dataplane::service::spec::ServiceAddr,
    /// The real server's address.
    pub addr: std::net::IpAddr,
    /// The real server's port.
    pub port: u16,
    /// Whether its last checks passed.
    pub up: bool,
}
