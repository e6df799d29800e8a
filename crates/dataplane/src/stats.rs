//! Statistics roll-up: the side thread sums the workers' counters per real server, per
//! service and in total, and estimates rates the way IPVS's estimator does.
//!
//! Workers only ever add to their own cells ([`WorkerCounters`]); [`StatsRollup::collect`]
//! reads each live real server's cells, adds the change since the last read to that server's
//! totals and its service's, and remembers what it read. Nothing is reset in the workers, so
//! a collection can never lose a concurrent increment.
//!
//! Rates follow `ip_vs_est.c`: every 2 seconds the change of each counter becomes a
//! per-second rate, and the estimate moves a quarter of the way toward it (an exponentially
//! weighted average over roughly the last 8 seconds). Connection and packet rates are kept
//! scaled by 2^10 and byte rates by 2^5, as in the kernel, so integer arithmetic keeps
//! precision.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use xvs_conntrack::DestId;

use xvs_forwarders::Reason;

use crate::packet_io::FrameAccount;
use crate::pipeline::counters::{
    DestCells, Drop, MAX_PORTS, PortCells, RX_BATCH_BUCKETS, WorkerCounters,
};
use crate::service::snapshot::{Snapshot, dest_slot};
use crate::service::spec::ServiceAddr;
pub use xvs_model::{Rates, Stats};

/// How often [`StatsRollup::estimate`] must be called, in seconds (IPVS: 2 s).
pub const ESTIMATE_INTERVAL_SECS: u64 = 2;

/// The counters of one set of traffic, read from the cells of one real server.
fn read(cells: &DestCells) -> Stats {
    Stats {
        conns: cells.conns.load(Ordering::Relaxed),
        in_pkts: cells.in_pkts.load(Ordering::Relaxed),
        out_pkts: cells.out_pkts.load(Ordering::Relaxed),
        in_bytes: cells.in_bytes.load(Ordering::Relaxed),
        out_bytes: cells.out_bytes.load(Ordering::Relaxed),
    }
}

/// Frame counters of all workers together (see [`StatsRollup::frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames sent on.
    pub tx: u64,
    /// ICMP errors sent back to senders.
    pub icmp_sent: u64,
    /// Packets handed to the director's kernel for local real servers.
    pub local_delivered: u64,
    /// Pipeline drops, indexed by `Drop as usize`.
    pub drops: [u64; Drop::COUNT],
    /// Forwarders refusals, indexed by `Reason as usize`.
    pub refused: [u64; Reason::COUNT],
    /// Frames the kernel dropped before a receive ring (the worker fell behind).
    pub rx_ring_full: u64,
    /// Frames dropped at a full transmit ring.
    pub tx_ring_full: u64,
    /// Frames with a verdict for a port that does not exist.
    pub bad_verdict: u64,
    /// Descriptors the kernel returned that xvs had not handed it.
    pub invalid_descs: u64,
}

impl Default for FrameCounters {
    fn default() -> Self {
        FrameCounters {
            rx: 0,
            tx: 0,
            icmp_sent: 0,
            local_delivered: 0,
            drops: [0; Drop::COUNT],
            refused: [0; Reason::COUNT],
            rx_ring_full: 0,
            tx_ring_full: 0,
            bad_verdict: 0,
            invalid_descs: 0,
        }
    }
}

/// The frame I/O's own losses on one port of one worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortLosses {
    /// Frames the kernel dropped before the receive ring (full, or no free frame).
    pub rx_ring_full: u64,
    /// Frames dropped at a full transmit ring.
    pub tx_ring_full: u64,
    /// Frames with a verdict for a port that does not exist.
    pub bad_verdict: u64,
    /// Descriptors the kernel returned that xvs had not handed it.
    pub invalid_descs: u64,
}

impl PortLosses {
    fn read(cells: &PortCells) -> PortLosses {
        PortLosses {
            rx_ring_full: cells.rx_ring_full.load(Ordering::Relaxed),
            tx_ring_full: cells.tx_ring_full.load(Ordering::Relaxed),
            bad_verdict: cells.bad_verdict.load(Ordering::Relaxed),
            invalid_descs: cells.invalid_descs.load(Ordering::Relaxed),
        }
    }
}

/// One worker's frame counters, for per-worker metrics (see [`StatsRollup::worker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerFrames {
    /// Frames received, sent on, ICMP errors sent, drops and refusals (its ports' losses
    /// summed into `rx_ring_full`, `tx_ring_full`, `bad_verdict`, `invalid_descs`).
    pub frames: FrameCounters,
    /// Each port's losses, in port order (one arm: only the first is used).
    pub ports: [PortLosses; MAX_PORTS],
    /// Receive batches by size bucket (see [`WorkerCounters::rx_batches`]).
    pub rx_batches: [u64; RX_BATCH_BUCKETS],
    /// Where its frames were at its last turn.
    pub umem: FrameAccount,
}

/// IPVS's rate estimator for one set of counters.
#[derive(Debug, Default, Clone, Copy)]
struct Estimator {
    last: Stats,
    cps: u64,
    in_pps: u64,
    out_pps: u64,
    in_bps: u64,
    out_bps: u64,
}

impl Estimator {
    /// One 2-second step toward the rates of `now`.
    fn step(&mut self, now: &Stats) {
        let d = now.minus(&self.last);
        self.last = *now;
        // Per second over 2 s, scaled by 2^10 (counts) or 2^5 (bytes): delta << 9, << 4.
        ewma(&mut self.cps, d.conns << 9);
        ewma(&mut self.in_pps, d.in_pkts << 9);
        ewma(&mut self.out_pps, d.out_pkts << 9);
        ewma(&mut self.in_bps, d.in_bytes << 4);
        ewma(&mut self.out_bps, d.out_bytes << 4);
    }

    fn rates(&self) -> Rates {
        Rates {
            cps: (self.cps + 0x1ff) >> 10,
            in_pps: (self.in_pps + 0x1ff) >> 10,
            out_pps: (self.out_pps + 0x1ff) >> 10,
            in_bps: (self.in_bps + 0xf) >> 5,
            out_bps: (self.out_bps + 0xf) >> 5,
        }
    }
}

/// `avg += (rate - avg) / 4`, in unsigned arithmetic.
fn ewma(avg: &mut u64, rate: u64) {
    if rate >= *avg {
        *avg += (rate - *avg) >> 2;
    } else {
        *avg -= (*avg - rate) >> 2;
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    totals: Stats,
    estimator: Estimator,
}

impl Entry {
    fn zero(&mut self) {
        *self = Entry {
            totals: Stats::default(),
            estimator: Estimator::default(),
        };
    }
}

/// Stats and rates per real server, per service and for the whole director.
#[derive(Debug)]
pub struct StatsRollup {
    workers: Vec<Arc<WorkerCounters>>,
    /// Per worker, per real-server slot: the cells as last read.
    seen: Vec<HashMap<u16, Stats>>,
    dests: HashMap<DestId, Entry>,
    services: HashMap<ServiceAddr, Entry>,
    total: Entry,
}

impl StatsRollup {
    /// A roll-up over these workers' counters.
    pub fn new(workers: Vec<Arc<WorkerCounters>>) -> Self {
        let seen = workers.iter().map(|_| HashMap::new()).collect();
        StatsRollup {
            workers,
            seen,
            dests: HashMap::new(),
            services: HashMap::new(),
            total: Entry::default(),
        }
    }

    /// Adds what the workers counted since the last call, for the real servers of
    /// `snapshot`. Call it before switching snapshots too, so a removed server's last packets
    /// are still counted for its service.
    pub fn collect(&mut self, snapshot: &Snapshot) {
        for (worker, seen) in self.workers.iter().zip(self.seen.iter_mut()) {
            for (service, dest, _) in snapshot.dests() {
                let slot = dest_slot(dest.id);
                let now = read(&worker.dests[slot]);
                let last = seen.insert(slot as u16, now).unwrap_or_default();
                let delta = now.minus(&last);
                if delta == Stats::default() {
                    continue;
                }
                self.dests.entry(dest.id).or_default().totals.add(&delta);
                self.services
                    .entry(service.spec.addr)
                    .or_default()
                    .totals
                    .add(&delta);
                self.total.totals.add(&delta);
            }
        }
        // Forget servers that are gone.
        let live: std::collections::HashSet<DestId> =
            snapshot.dests().map(|(_, d, _)| d.id).collect();
        self.dests.retain(|id, _| live.contains(id));
        let services: std::collections::HashSet<ServiceAddr> =
            snapshot.services.iter().map(|s| s.spec.addr).collect();
        self.services.retain(|addr, _| services.contains(addr));
    }

    /// Advances every rate estimate by one interval; call every [`ESTIMATE_INTERVAL_SECS`].
    pub fn estimate(&mut self) {
        for entry in self.dests.values_mut().chain(self.services.values_mut()) {
            entry.estimator.step(&entry.totals);
        }
        self.total.estimator.step(&self.total.totals);
    }

    /// `ipvsadm -Z`: zero one service (and its servers) or, with `None`, everything.
    pub fn zero(&mut self, snapshot: &Snapshot, service: Option<&ServiceAddr>) {
        match service {
            None => {
                self.dests.values_mut().for_each(Entry::zero);
                self.services.values_mut().for_each(Entry::zero);
                self.total.zero();
            }
            Some(addr) => {
                if let Some(entry) = self.services.get_mut(addr) {
                    entry.zero();
                }
                for (s, dest, _) in snapshot.dests() {
                    if s.spec.addr == *addr
                        && let Some(entry) = self.dests.get_mut(&dest.id)
                    {
                        entry.zero();
                    }
                }
            }
        }
    }

    /// A real server's totals and rates.
    pub fn dest(&self, id: DestId) -> (Stats, Rates) {
        self.dests
            .get(&id)
            .map(|e| (e.totals, e.estimator.rates()))
            .unwrap_or_default()
    }

    /// A service's totals and rates.
    pub fn service(&self, addr: &ServiceAddr) -> (Stats, Rates) {
        self.services
            .get(addr)
            .map(|e| (e.totals, e.estimator.rates()))
            .unwrap_or_default()
    }

    /// Frame counters summed over the workers: received, sent on, ICMP errors sent back,
    /// pipeline drops by [`crate::pipeline::counters::Drop`], forwarders refusals by
    /// [`xvs_forwarders::Reason`].
    pub fn frames(&self) -> FrameCounters {
        let mut sum = FrameCounters::default();
        for worker in 0..self.workers.len() {
            let w = self.worker(worker).frames;
            sum.rx += w.rx;
            sum.tx += w.tx;
            sum.icmp_sent += w.icmp_sent;
            sum.local_delivered += w.local_delivered;
            for (total, n) in sum.drops.iter_mut().zip(w.drops) {
                *total += n;
            }
            for (total, n) in sum.refused.iter_mut().zip(w.refused) {
                *total += n;
            }
            sum.rx_ring_full += w.rx_ring_full;
            sum.tx_ring_full += w.tx_ring_full;
            sum.bad_verdict += w.bad_verdict;
            sum.invalid_descs += w.invalid_descs;
        }
        sum
    }

    /// Workers counted (one per queue, in queue order).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// One worker's frame counters (`index` below [`StatsRollup::worker_count`]), read
    /// straight from its cells.
    pub fn worker(&self, index: usize) -> WorkerFrames {
        let w = &self.workers[index];
        let mut frames = FrameCounters {
            rx: w.rx_frames.load(Ordering::Relaxed),
            tx: w.tx_frames.load(Ordering::Relaxed),
            icmp_sent: w.icmp_sent.load(Ordering::Relaxed),
            local_delivered: w.local_delivered.load(Ordering::Relaxed),
            ..FrameCounters::default()
        };
        for why in Drop::ALL {
            frames.drops[why as usize] = w.drops_of(why);
        }
        for reason in Reason::ALL {
            frames.refused[reason as usize] = w.refused_of(reason);
        }
        let ports: [PortLosses; MAX_PORTS] =
            std::array::from_fn(|port| PortLosses::read(&w.ports[port]));
        for port in &ports {
            frames.rx_ring_full += port.rx_ring_full;
            frames.tx_ring_full += port.tx_ring_full;
            frames.bad_verdict += port.bad_verdict;
            frames.invalid_descs += port.invalid_descs;
        }
        let rx_batches = std::array::from_fn(|k| w.rx_batches[k].load(Ordering::Relaxed));
        WorkerFrames {
            frames,
            ports,
            rx_batches,
            umem: w.umem.load(),
        }
    }

    /// The whole director's totals and rates.
    pub fn total(&self) -> (Stats, Rates) {
        (self.total.totals, self.total.estimator.rates())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::counters::add;
    use crate::service::snapshot::SnapshotBuilder;
    use crate::service::spec::{DestSpec, ForwardMethod, Protocol, ServiceSpec, ServiceTableSpec};
    use std::net::{IpAddr, Ipv4Addr};

    fn snapshot() -> Snapshot {
        let addr = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 80,
        };
        let mut t = ServiceTableSpec::default();
        t.add_service(ServiceSpec::new(addr)).unwrap();
        for last in [1, 2] {
            let d = DestSpec {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
                port: 80,
                method: ForwardMethod::Route,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            t.add_dest(&addr, d).unwrap();
        }
        SnapshotBuilder::new().build(&t).unwrap()
    }

    #[test]
    fn sums_workers_per_server_and_service_and_zeroes() {
        let s = snapshot();
        let workers = vec![
            Arc::new(WorkerCounters::default()),
            Arc::new(WorkerCounters::default()),
        ];
        let a = s.services[0].dests[0].id;
        let b = s.services[0].dests[1].id;
        add(&workers[0].dests[dest_slot(a)].in_pkts, 3);
        add(&workers[1].dests[dest_slot(a)].in_pkts, 4);
        add(&workers[1].dests[dest_slot(b)].conns, 1);
        let mut rollup = StatsRollup::new(workers.clone());
        rollup.collect(&s);
        assert_eq!(rollup.dest(a).0.in_pkts, 7);
        assert_eq!(
            rollup.service(&s.services[0].spec.addr).0,
            Stats {
                conns: 1,
                in_pkts: 7,
                ..Default::default()
            }
        );
        // Only the change is added on the next collection.
        add(&workers[0].dests[dest_slot(a)].in_pkts, 1);
        rollup.collect(&s);
        rollup.collect(&s);
        assert_eq!(rollup.dest(a).0.in_pkts, 8);
        assert_eq!(rollup.total().0.in_pkts, 8);
        rollup.zero(&s, Some(&s.services[0].spec.addr));
        assert_eq!(rollup.dest(a).0, Stats::default());
        add(&workers[0].dests[dest_slot(a)].in_pkts, 2);
        rollup.collect(&s);
        assert_eq!(rollup.dest(a).0.in_pkts, 2);
    }

    #[test]
    fn frame_counters_per_worker_and_summed() {
        let workers = vec![
            Arc::new(WorkerCounters::default()),
            Arc::new(WorkerCounters::default()),
        ];
        add(&workers[0].rx_frames, 5);
        add(&workers[1].rx_frames, 7);
        add(&workers[1].tx_frames, 6);
        WorkerCounters::drop(&workers[1], Drop::NoConnection);
        workers[0].refuse(Reason::ALL[0]);
        workers[1].ports[1].tx_ring_full.store(3, Ordering::Relaxed);
        workers[0].ports[0].rx_ring_full.store(4, Ordering::Relaxed);
        let rollup = StatsRollup::new(workers);
        assert_eq!(rollup.worker_count(), 2);
        let second = rollup.worker(1);
        assert_eq!((second.frames.rx, second.frames.tx), (7, 6));
        assert_eq!(second.ports[1].tx_ring_full, 3);
        assert_eq!(second.ports[0], PortLosses::default());
        assert_eq!(second.frames.tx_ring_full, 3, "ports summed per worker");
        assert_eq!(rollup.worker(0).frames.rx_ring_full, 4);
        let all = rollup.frames();
        assert_eq!((all.rx, all.tx, all.tx_ring_full), (12, 6, 3));
        assert_eq!(all.drops[Drop::NoConnection as usize], 1);
        assert_eq!(all.drops[Drop::Refused as usize], 1);
        assert_eq!(all.refused[Reason::ALL[0] as usize], 1);
    }

    #[test]
    fn rates_converge_like_the_ipvs_estimator() {
        let s = snapshot();
        let worker = Arc::new(WorkerCounters::default());
        let a = s.services[0].dests[0].id;
        let mut rollup = StatsRollup::new(vec![worker.clone()]);
        // 1000 packets and 10 connections per second, 100 bytes each packet.
        for _ in 0..80 {
            add(&worker.dests[dest_slot(a)].in_pkts, 2000);
            add(&worker.dests[dest_slot(a)].in_bytes, 200_000);
            add(&worker.dests[dest_slot(a)].conns, 20);
            rollup.collect(&s);
            rollup.estimate();
        }
        let rates = rollup.dest(a).1;
        assert_eq!((rates.cps, rates.in_pps, rates.in_bps), (10, 1000, 100_000));
        // After one interval the estimate has moved a quarter of the way.
        let mut fresh = StatsRollup::new(vec![worker.clone()]);
        fresh.collect(&s);
        fresh.estimate(); // first step from zero: starts from the totals
        fresh.zero(&s, None);
        add(&worker.dests[dest_slot(a)].in_pkts, 2000);
        fresh.collect(&s);
        fresh.estimate();
        assert_eq!(fresh.dest(a).1.in_pps, 250);
    }
}
