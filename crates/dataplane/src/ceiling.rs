//! The I/O ceiling: a worker whose pipeline is replaced by the least a forwarder must do.
//!
//! `make bench-compare` asks how close xvs comes to what its own I/O path allows. This stage
//! runs in the same worker loop, on the same AF_XDP sockets, rings, UMEM, batches and
//! wake-ups as the real director, but instead of parsing, tracking, scheduling and
//! rewriting it only writes the Ethernet header toward a real server's next hop, exactly as
//! the pipeline would address the frame (source: the egress link's MAC; destination: the
//! neighbour the routes name for that real server), taking the configured real servers in
//! turn per frame. The IP packet is left as it came (still to the VIP), so the real server's
//! interface counts the frame; `make bench-compare` gives the real servers the VIP on `lo`
//! for these rounds so their kernels also do the same work with it as with a translated
//! frame. Only for measuring one-way traffic to the real servers: replies are not
//! translated back.
//!
//! Started by `xvs run --io-ceiling` (hidden); nothing else uses it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use xvs_forwarders::Frame;

use crate::packet_io::Verdict;
use crate::pipeline::counters::{Drop, WorkerCounters};
use crate::pipeline::{Clock, Shared};
use crate::route::Neighbours;
use crate::service::snapshot::Snapshot;
use crate::worker::Stage;

/// Where one real server's frames go: the egress port and the Ethernet header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CeilingHop {
    port: u8,
    /// Destination MAC then source MAC, as they sit at the start of a frame.
    header: [u8; 12],
}

/// The I/O ceiling's per-worker forwarder. See the module documentation.
pub struct IoCeiling {
    shared: Shared,
    hops: Vec<CeilingHop>,
    next: usize,
}

impl IoCeiling {
    /// A forwarder toward the real servers of `shared`'s service table.
    pub fn new(shared: Shared) -> Self {
        let mut ceiling = IoCeiling {
            shared,
            hops: Vec::new(),
            next: 0,
        };
        ceiling.resolve_hops();
        ceiling
    }

    /// Looks up every IPv4 real server's next hop; unresolved ones are queued for the side
    /// thread (and left out until the neighbours it publishes name them).
    fn resolve_hops(&mut self) {
        self.hops.clear();
        let mut seen: Vec<Ipv4Addr> = Vec::new();
        for (_, dest, _) in self.shared.snapshot.dests() {
            let IpAddr::V4(addr) = dest.spec.addr else {
                continue;
            };
            if seen.contains(&addr) {
                continue;
            }
            seen.push(addr);
            let routes = &self.shared.routes;
            let Some((port, hop)) = routes.next_hop(addr) else {
                continue;
            };
            let Some(link) = routes.link(port) else {
                continue;
            };
            match self.shared.neighbours.get(port, hop) {
                Some(mac) => {
                    let mut header = [0u8; 12];
                    header[..6].copy_from_slice(&mac);
                    header[6..].copy_from_slice(&link.mac);
                    self.hops.push(CeilingHop { port, header });
                }
                None => {
                    let _ = self.shared.resolve.push((port, hop.into()));
                }
            }
        }
    }

    /// Switches to a new service table.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.shared.snapshot = snapshot;
        self.resolve_hops();
    }

    /// Switches to new neighbours.
    pub fn set_neighbours(&mut self, neighbours: Arc<Neighbours>) {
        self.shared.neighbours = neighbours;
        self.resolve_hops();
    }

    /// The worker's counters.
    pub fn counters(&self) -> &WorkerCounters {
        &self.shared.counters
    }

    /// Addresses every frame of the batch to the next real server in turn.
    #[inline]
    pub fn process_batch(&mut self, frames: &mut [Frame<'_>], verdicts: &mut [Verdict]) {
        if self.hops.is_empty() {
            let counters = &*self.shared.counters;
            for _ in frames.iter() {
                WorkerCounters::drop(counters, Drop::NeighbourUnresolved);
            }
            return;
        }
        for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
            let hop = self.hops[self.next];
            self.next = if self.next + 1 == self.hops.len() {
                0
            } else {
                self.next + 1
            };
            match frame.data_mut().get_mut(..12) {
                Some(eth) => {
                    eth.copy_from_slice(&hop.header);
                    *verdict = Verdict::Transmit { port: hop.port };
                }
                None => WorkerCounters::drop(&self.shared.counters, Drop::Refused),
            }
        }
    }
}

impl Stage for IoCeiling {
    fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        IoCeiling::set_snapshot(self, snapshot);
    }
    fn set_neighbours(&mut self, neighbours: Arc<Neighbours>) {
        IoCeiling::set_neighbours(self, neighbours);
    }
    fn set_clock(&mut self, _clock: Clock) {}
    fn install_synced(&mut self) {}
    #[inline]
    fn process_batch(&mut self, frames: &mut [Frame<'_>], _ingress: u8, verdicts: &mut [Verdict]) {
        IoCeiling::process_batch(self, frames, verdicts);
    }
    fn counters(&self) -> &WorkerCounters {
        IoCeiling::counters(self)
    }
    fn housekeeping(&mut self) {}
}
