//! The per-worker packet pipeline: parse, classify, track, schedule, rewrite.
//!
//! One [`Pipeline`] per worker. It owns the worker's connection-table shard and its scheduler
//! instances, and reads the shared service [`Snapshot`] and neighbours through `Arc`s it swaps
//! between batches (routes are fixed at start). [`Pipeline::process`] turns one received frame into a
//! [`Verdict`], rewriting it in place:
//!
//! 1. `parse` the frame once into a `PacketView` (malformed: counted and dropped);
//! 2. classify: a packet to a virtual service (a marked packet's fwmark service first, then the
//!    `(protocol, VIP, port)` service, as IPVS's `ip_vs_service_find`) is *inbound*; a packet whose tuple is the reply
//!    of a NAT connection is *outbound*; an ICMP error is matched by the packet it quotes;
//! 3. inbound: find the connection, or for a new one (TCP: SYN only) consult the persistence
//!    template and the scheduler, and create it; feed the packet to the TCP state machine;
//! 4. rewrite for the real server's method (DR, NAT, TUN) toward the next hop's MAC;
//! 5. count per real server (connections, packets, bytes) and per drop reason.
//!
//! [`Pipeline::process_batch`] runs these as stages over a batch, and gives an established
//! flow's common packet to the fast path (`established.rs`), which does steps 1, 3 and 4 in
//! their cheapest form and hands every other frame, untouched, to the full path above.
//!
//! IPv6 frames (EtherType 0x86dd) take the same stages through `v6.rs`: the same
//! prefetching, established fast path, connection table, schedulers and counters, with the
//! forwarders' IPv6 rewrites.
//!
//! Nothing here allocates, takes a lock or makes a system call per packet.

pub mod counters;
mod established;
mod mixed;
mod v6;

use established::Fast;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use crossbeam::queue::ArrayQueue;
use xvs_conntrack::{
    Conn, ConnTable, DestId, Direction, Endpoint, FlowKey, FlowRef, Inbound, InsertError, NewConn,
    Protocol, ReturnPath, Secs, Shard, TcpFlags, TemplateKey, Tracked,
};
use xvs_forwarders::icmp::{self, IcmpErrorView};
use xvs_forwarders::tun::Tunnel;
use xvs_forwarders::{Egress, Frame, PacketView, Reason, Transmit, dr, nat, parse, tun};
use xvs_sched::{Request, SchedOptions, Scheduler};

use crate::local::LocalDelivery;
use crate::route::{HopAddr, Neighbours, Routes};
use crate::service::snapshot::{LoadCounters, Service, Snapshot, conntrack_addr, dest_slot};
use crate::service::spec::{ForwardMethod, ServiceAddr};
use crate::sync::{INSTALLS_PER_TURN, Install, SyncPort};
use counters::{Drop, WorkerCounters, add};

use crate::packet_io::BATCH_SIZE;
pub use crate::packet_io::Verdict;

/// Neighbours to resolve (IPv4 or IPv6 next hops), from the workers to the side thread.
pub type ResolveQueue = ArrayQueue<(u8, IpAddr)>;

/// The worker's view of time, set once per batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Monotonic seconds (connection timers).
    pub secs: Secs,
    /// Monotonic milliseconds (scheduler caches).
    pub millis: u64,
}

/// What a worker shares with the rest of the director.
#[derive(Clone)]
pub struct Shared {
    /// The service table.
    pub snapshot: Arc<Snapshot>,
    /// The director's links.
    pub routes: Arc<Routes>,
    /// Resolved MAC addresses.
    pub neighbours: Arc<Neighbours>,
    /// This worker's counters (the side thread reads them).
    pub counters: Arc<WorkerCounters>,
    /// Where unresolved next hops are queued.
    pub resolve: Arc<ResolveQueue>,
    /// Source address of tunnels (`-i`); the egress link's address when `None`.
    pub tunnel_source: Option<Ipv4Addr>,
    /// Source address of IPv6 tunnels; the egress link's global IPv6 address when `None`.
    pub tunnel_source6: Option<Ipv6Addr>,
    /// This worker's end of the connection sync (idle unless a sync daemon runs).
    pub sync: Arc<SyncPort>,
    /// Where packets for local real servers go (the director's kernel), once opened; until
    /// then they are dropped and counted.
    pub local: Arc<OnceLock<LocalDelivery>>,
}

/// One worker's packet pipeline.
pub struct Pipeline {
    worker: u16,
    shard: Shard,
    shared: Shared,
    /// One scheduler per service of the snapshot, index-aligned, with what it was built for.
    schedulers: Vec<(ServiceAddr, SchedOptions, Box<dyn Scheduler>)>,
    clock: Clock,
    tunnel_ident: u16,
    /// The way to each IPv4 real server, filled on first use.
    egress: EgressCache<Ipv4Addr>,
    /// The way to each IPv6 real server (a real server has one family: slots never clash).
    egress6: EgressCache<Ipv6Addr>,
}

/// An address family the pipeline forwards to: its routing ([`HopAddr`]) and the tunnel
/// source configured for it.
trait Family: HopAddr {
    /// The configured tunnel source of this family.
    fn configured_source(shared: &Shared) -> Option<Self>;
}

impl Family for Ipv4Addr {
    #[inline]
    fn configured_source(shared: &Shared) -> Option<Self> {
        shared.tunnel_source
    }
}

impl Family for Ipv6Addr {
    #[inline]
    fn configured_source(shared: &Shared) -> Option<Self> {
        shared.tunnel_source6
    }
}

/// The egress toward each real server (port, MACs, MTU and the tunnel source), by
/// [`DestId`] slot, so an established flow's packet looks up no route and no neighbour. It
/// is valid for one epoch: a new service table, new neighbours or new routes start the next.
struct EgressCache<A> {
    epoch: u32,
    by_slot: Vec<CachedEgress<A>>,
}

impl<A> Default for EgressCache<A> {
    fn default() -> Self {
        EgressCache {
            epoch: 1,
            by_slot: Vec::new(),
        }
    }
}

/// One real server's entry: valid while `epoch` is the cache's and `tag` is the real
/// server's generation. A snapshot change starts a new epoch, so a valid entry also vouches
/// that its real server is live in the current snapshot and forwards by `method`: the fast
/// path needs no snapshot lookup.
#[derive(Clone, Copy)]
struct CachedEgress<A> {
    epoch: u32,
    tag: u16,
    method: ForwardMethod,
    hop: Hop<A>,
}

/// Where a frame to one real server leaves: the port, the link parameters and, for TUN,
/// the outer source; or, for a local real server, the director's own kernel.
#[derive(Clone, Copy)]
struct Hop<A> {
    port: u8,
    egress: Egress,
    tunnel_source: Option<A>,
    local: bool,
}

impl<A: Family> EgressCache<A> {
    fn invalidate(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Wrapped: forget every entry rather than trust an ancient epoch.
            self.by_slot.clear();
            self.epoch = 1;
        }
    }

    /// The hop toward live real server `dest` at `addr`, forwarding by `method` (both from
    /// the current snapshot), resolved now if not cached.
    #[inline(always)]
    fn hop(
        &mut self,
        shared: &Shared,
        dest: DestId,
        method: ForwardMethod,
        addr: A,
    ) -> Result<Hop<A>, Drop> {
        match self.entry(dest) {
            Some(c) => Ok(c.hop),
            None => self.fill(shared, dest, method, addr),
        }
    }

    /// The forwarding method and hop of live real server `dest` if they are cached (the
    /// fast path never resolves; it reads the hop in place).
    #[inline(always)]
    fn cached(&self, dest: DestId) -> Option<(ForwardMethod, &Hop<A>)> {
        self.entry(dest).map(|c| (c.method, &c.hop))
    }

    /// `dest`'s entry if it holds: of this epoch, for this generation of the real server.
    #[inline(always)]
    fn entry(&self, dest: DestId) -> Option<&CachedEgress<A>> {
        self.by_slot
            .get(dest_slot(dest))
            .filter(|c| c.epoch == self.epoch && c.tag == dest_tag(dest))
    }

    /// Resolves and remembers the hop toward `dest` (the first packet after a change).
    #[cold]
    #[inline(never)]
    fn fill(
        &mut self,
        shared: &Shared,
        dest: DestId,
        method: ForwardMethod,
        addr: A,
    ) -> Result<Hop<A>, Drop> {
        let slot = dest_slot(dest);
        let hop = if addr.is_own(&shared.routes) {
            Hop {
                port: 0,
                egress: Egress {
                    src_mac: [0; 6],
                    dst_mac: [0; 6],
                    mtu: 0,
                },
                tunnel_source: None,
                local: true,
            }
        } else {
            let (port, egress) = egress_to(shared, addr)?;
            Hop {
                port,
                egress,
                tunnel_source: tunnel_source(shared, addr),
                local: false,
            }
        };
        if self.by_slot.len() <= slot {
            self.by_slot.resize(
                slot + 1,
                CachedEgress {
                    epoch: self.epoch.wrapping_sub(1),
                    tag: 0,
                    method,
                    hop,
                },
            );
        }
        self.by_slot[slot] = CachedEgress {
            epoch: self.epoch,
            tag: dest_tag(dest),
            method,
            hop,
        };
        Ok(hop)
    }
}

impl Pipeline {
    /// A pipeline for worker `worker`, owning `shard`.
    pub fn new(worker: u16, shard: Shard, shared: Shared) -> Self {
        let mut pipeline = Pipeline {
            worker,
            shard,
            shared: shared.clone(),
            schedulers: Vec::new(),
            clock: Clock::default(),
            tunnel_ident: worker.wrapping_mul(0x3779),
            egress: EgressCache::default(),
            egress6: EgressCache::default(),
        };
        pipeline.set_snapshot(shared.snapshot);
        pipeline
    }

    /// Switches to a new service table. Schedulers of services that kept their scheduler
    /// and options keep their state (rr position, lblc cache) and see the new servers.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.egress.invalidate();
        self.egress6.invalidate();
        let mut old: Vec<_> = std::mem::take(&mut self.schedulers);
        for service in &snapshot.services {
            let mut options = service.spec.sched_options();
            options.seed = options.seed.wrapping_add(u64::from(self.worker));
            let reused = old
                .iter()
                .position(|(addr, opts, s)| {
                    *addr == service.spec.addr
                        && *opts == options
                        && s.name() == service.spec.scheduler
                })
                .map(|i| old.swap_remove(i).2);
            let scheduler = match reused {
                Some(mut s) => {
                    s.update(&service.servers);
                    s
                }
                None => build_scheduler(service, &options),
            };
            self.schedulers
                .push((service.spec.addr, options, scheduler));
        }
        // IPVS expire_nodest_conn: a removed real server's connections end now rather than
        // at their next packet (which would find them gone anyway).
        if self.shard.table().options().expire_nodest_conn {
            let previous = std::mem::replace(&mut self.shared.snapshot, snapshot);
            let current = &self.shared.snapshot;
            if previous
                .dests()
                .any(|(_, d, _)| current.dest(d.id).is_none())
            {
                // One walk of the shard for every removed server together.
                let removed = |id| previous.dest(id).is_some() && current.dest(id).is_none();
                self.shard
                    .expire_dests(removed, &mut LoadCounters(&previous));
            }
        } else {
            self.shared.snapshot = snapshot;
        }
    }

    /// Switches to new neighbours (after the side thread resolved some).
    pub fn set_neighbours(&mut self, neighbours: Arc<Neighbours>) {
        self.egress.invalidate();
        self.egress6.invalidate();
        self.shared.neighbours = neighbours;
    }

    /// Switches to new routes (links changed).
    pub fn set_routes(&mut self, routes: Arc<Routes>) {
        self.egress.invalidate();
        self.egress6.invalidate();
        self.shared.routes = routes;
    }

    /// Sets the time for the next batch.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The snapshot in use.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.shared.snapshot
    }

    /// The worker's counters.
    pub fn counters(&self) -> &WorkerCounters {
        &self.shared.counters
    }

    /// The worker's shard.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Expires the shard's due connections and ages scheduler caches (call every few ms).
    pub fn housekeeping(&mut self) {
        let snapshot = &self.shared.snapshot;
        self.shard
            .expire(self.clock.secs, &mut LoadCounters(snapshot));
        for ((_, _, scheduler), service) in self.schedulers.iter_mut().zip(&snapshot.services) {
            scheduler.tick(&service.servers, self.clock.millis);
        }
    }

    /// Installs what the sync backup received for this worker's shard (a bounded number per
    /// call, so a resync stream never stalls the data path). Returns how many it took.
    pub fn install_synced(&mut self) -> usize {
        let port = &*self.shared.sync;
        let snapshot = &self.shared.snapshot;
        let now = self.clock.secs;
        let mut taken = 0;
        while taken < INSTALLS_PER_TURN {
            let Some(install) = port.install.pop() else {
                break;
            };
            taken += 1;
            let mut loads = LoadCounters(snapshot);
            let done = match install {
                Install::Conn {
                    new,
                    state,
                    timeout,
                } => self
                    .shard
                    .install(new, state, timeout, now, &mut loads)
                    .is_ok(),
                Install::Template {
                    key,
                    dest,
                    dest_addr,
                    timeout,
                } => self
                    .shard
                    .install_template(&key, dest, dest_addr, timeout, now, &mut loads)
                    .is_ok(),
            };
            let counter = if done {
                &port.installed
            } else {
                &port.install_failed
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if taken > 0 {
            port.installed_any
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        taken
    }

    /// Processes a batch of received frames in place, `verdicts[i]` for `frames[i]`, in
    /// stages over the whole batch, as DPDK's l3fwd and VPP do:
    /// 1. start loading the connection-table bucket of every TCP/UDP packet (from a quick
    ///    read of its addresses and ports): at millions of flows each lookup would otherwise
    ///    wait for two cache misses in turn;
    /// 2. then the first entry of each bucket's chain (the heads are in cache by now);
    /// 3. forward each frame, its entry in cache by now: an established flow's common packet
    ///    by the fast path (`established.rs`), every other by [`process`](Self::process).
    pub fn process_batch(
        &mut self,
        frames: &mut [Frame<'_>],
        ingress: u8,
        verdicts: &mut [Verdict],
    ) {
        let mut buckets = [NO_BUCKET; BATCH_SIZE];
        for (frames, verdicts) in frames
            .chunks_mut(BATCH_SIZE)
            .zip(verdicts.chunks_mut(BATCH_SIZE))
        {
            for (frame, bucket) in frames.iter().zip(buckets.iter_mut()) {
                *bucket = self.quick_bucket(frame.data());
            }
            for &bucket in &buckets[..frames.len()] {
                if bucket != NO_BUCKET {
                    self.shard.prefetch_inbound_chain(bucket);
                }
            }
            for ((frame, verdict), &bucket) in
                frames.iter_mut().zip(verdicts.iter_mut()).zip(&buckets)
            {
                *verdict = match self.established(frame, bucket, ingress) {
                    Fast::Done(verdict) => verdict,
                    Fast::Parsed(view) => self.process_parsed(frame, &view, bucket, ingress),
                    Fast::Unparsed if is_ipv6(frame.data()) => {
                        match self.established6(frame, bucket, ingress) {
                            Fast::Done(verdict) => verdict,
                            Fast::Parsed(view) => {
                                self.process_parsed6(frame, &view, bucket, ingress)
                            }
                            Fast::Unparsed => self.process6(frame, bucket, ingress),
                        }
                    }
                    Fast::Unparsed => self.process(frame, ingress),
                };
            }
        }
    }

    /// Processes one received frame in place.
    #[inline]
    pub fn process(&mut self, frame: &mut Frame<'_>, ingress: u8) -> Verdict {
        if is_ipv6(frame.data()) {
            return self.process6(frame, NO_BUCKET, ingress);
        }
        let view = match parse(frame) {
            Ok(view) => view,
            Err(reason) => {
                let counters = &*self.shared.counters;
                add(&counters.rx_frames, 1);
                return refuse(counters, reason);
            }
        };
        self.process_parsed(frame, &view, NO_BUCKET, ingress)
    }

    /// [`process`](Self::process) after [`parse`], for a frame whose `view` is known and, for
    /// TCP and UDP, its inbound `bucket` if stage 1 hashed it (else [`NO_BUCKET`]).
    #[inline(always)]
    fn process_parsed(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        bucket: usize,
        ingress: u8,
    ) -> Verdict {
        add(&self.shared.counters.rx_frames, 1);
        let view = *view;
        let outcome = if view.is_icmp_error() {
            self.icmp_error(frame, &view, ingress)
        } else {
            match view.ports() {
                Some((sport, dport)) => {
                    self.tcp_or_udp(frame, &view, sport, dport, bucket, ingress)
                }
                None => Err(Drop::NotForUs),
            }
        };
        let counters = &*self.shared.counters;
        match outcome {
            Ok(verdict @ Verdict::Transmit { .. }) => {
                add(&counters.tx_frames, 1);
                verdict
            }
            Ok(Verdict::Drop) => Verdict::Drop,
            Err(why) => {
                counters.drop(why);
                Verdict::Drop
            }
        }
    }

    // The stages below return `Err(why)` for a drop the pipeline counts; a refusal by the
    // forwarders is counted where it happens and comes back as `Ok(Verdict::Drop)`.

    fn tcp_or_udp(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        sport: u16,
        dport: u16,
        bucket: usize,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let protocol = view.protocol();
        // IPVS's order: the fwmark service of the packet's mark, then (protocol, VIP, port).
        if let Some(service) = self.shared.snapshot.service_for(protocol, view.dst, dport) {
            return self.inbound(frame, view, service, (sport, dport), bucket, ingress);
        }
        let key = FlowKey::new(
            Protocol::from_u8(protocol),
            endpoint(view.src, sport),
            endpoint(view.dst, dport),
        );
        let conn = self
            .shard
            .table()
            .lookup_outbound(&key)
            .ok_or(Drop::NotForUs)?;
        self.outbound(frame, view, &conn, ingress)
    }

    /// Client -> virtual service.
    fn inbound(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        service_index: usize,
        (sport, dport): (u16, u16),
        bucket: usize,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let key = FlowKey::new(
            Protocol::from_u8(view.protocol()),
            endpoint(view.src, sport),
            endpoint(view.dst, dport),
        );
        let flags = TcpFlags::from_byte(view.tcp_flags().map_or(0, |f| f.0));
        let placed = self.place(service_index, &key, flags, bucket)?;
        let shared = &self.shared;
        let counters = &*shared.counters;
        let (dest_id, method, dest_addr) = match placed {
            Placed::OnePacket {
                dest,
                method,
                dest_addr,
            } => (dest, method, dest_addr),
            Placed::Tracked {
                flow,
                dest,
                dest_addr,
            } => {
                if shared
                    .sync
                    .master
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    sync_out(self.shard.table(), &shared.sync, flow);
                }
                let method = shared.snapshot.dest_method(dest).ok_or(Drop::DestRemoved)?;
                (dest, method, dest_addr)
            }
        };
        count_in(counters, dest_id, view);
        self.send_to(frame, view, dest_id, method, dest_addr, ingress)
    }

    /// The connection-table and scheduling half of an inbound packet, the same for both
    /// address families: the packet's connection found (its state advanced by `flags`) or,
    /// for a packet that may open one, a real server chosen and the connection created
    /// (counted for the real server), or for a one-packet (`-o`) UDP service just the
    /// choice. `bucket` is the key's inbound bucket when stage 1 hashed it.
    #[inline(always)]
    fn place(
        &mut self,
        service_index: usize,
        key: &FlowKey,
        flags: TcpFlags,
        bucket: usize,
    ) -> Result<Placed, Drop> {
        let shared = &self.shared;
        let snapshot = &*shared.snapshot;
        let counters = &*shared.counters;
        let service = &snapshot.services[service_index];
        let mut loads = LoadCounters(snapshot);
        let now = self.clock.secs;
        let opening = flags.opens();
        let bucket = if bucket == NO_BUCKET {
            self.shard.prefetch_inbound(key)
        } else {
            bucket
        };
        // The common case first: a packet of a flow this worker knows, looked up and its
        // state updated in one step.
        let tracked = if opening {
            Tracked::Miss
        } else {
            self.shard
                .track_inbound_at(bucket, key, flags, now, snapshot, &mut loads)
        };
        let (flow, dest, dest_addr) = match tracked {
            Tracked::Hit(hit) => (hit.flow, hit.dest, hit.dest_addr),
            Tracked::Drop => return Err(Drop::DestRemoved),
            Tracked::Miss => {
                // A SYN may reopen a finished connection's tuple: IPVS's conn_reuse_mode
                // then schedules it afresh instead of reusing the old entry's real server.
                let found = if opening {
                    self.shard
                        .lookup_inbound_new_at(bucket, key, snapshot, &mut loads)
                } else {
                    Inbound::Miss
                };
                // A synced flow may sit in another worker's shard (the backup cannot know
                // which queue the NIC hashes it to): look there before calling it new.
                let found = match found {
                    Inbound::Miss
                        if shared
                            .sync
                            .installed_any
                            .load(std::sync::atomic::Ordering::Relaxed) =>
                    {
                        self.shard
                            .table()
                            .lookup_inbound_any(key)
                            .map_or(Inbound::Miss, Inbound::Hit)
                    }
                    other => other,
                };
                match found {
                    Inbound::Hit(conn) => {
                        let _ = self.shard.on_packet(
                            conn.flow,
                            Direction::Input,
                            flags,
                            now,
                            &mut loads,
                        );
                        (conn.flow, conn.dest, conn.dest_addr)
                    }
                    Inbound::Drop => return Err(Drop::DestRemoved),
                    Inbound::Miss => {
                        // IPVS opens TCP connections on a SYN only; anything else for an
                        // unknown flow is stray (a flow from before a restart, a scan) and
                        // is dropped. Under sloppy_tcp any segment but an RST opens one (a
                        // flow ECMP moved here from another director: mh picks its server).
                        if key.proto == Protocol::Tcp
                            && (flags.rst()
                                || !(flags.syn()
                                    || service.spec.sloppy_tcp
                                    || self.shard.table().sloppy_tcp()))
                        {
                            return Err(Drop::NoConnection);
                        }
                        let request = Request {
                            src: key.src.addr.to_ip(),
                            src_port: key.src.port,
                            dst: key.dst.addr.to_ip(),
                            dst_port: key.dst.port,
                            now_ms: self.clock.millis,
                        };
                        let scheduler = &mut *self.schedulers[service_index].2;
                        if service.spec.one_packet && key.proto == Protocol::Udp {
                            // -o: every datagram is scheduled on its own and leaves no
                            // entry; a persistent service still keeps the client on its
                            // template's server.
                            let choice = choose(
                                &mut self.shard,
                                scheduler,
                                service,
                                key,
                                &request,
                                now,
                                &mut loads,
                            )?;
                            let dest = &service.dests[choice.index];
                            add(&counters.dests[dest_slot(dest.id)].conns, 1);
                            return Ok(Placed::OnePacket {
                                dest: dest.id,
                                method: dest.spec.method,
                                dest_addr: choice.dest_addr,
                            });
                        }
                        let opened = open(
                            &mut self.shard,
                            scheduler,
                            service,
                            &Opening { key, bucket, flags },
                            &request,
                            now,
                            &mut loads,
                        )?;
                        add(&counters.dests[dest_slot(opened.1)].conns, 1);
                        opened
                    }
                }
            }
        };
        Ok(Placed::Tracked {
            flow,
            dest,
            dest_addr,
        })
    }

    /// A NAT reply (either family) fed to its connection's state and counted for its real
    /// server. The entry may live in another worker's shard (RSS put the reply on another
    /// queue): its state word is updated through the shared table.
    pub(super) fn track_reply(&mut self, conn: &Conn, flags: TcpFlags, bytes: u64) {
        let snapshot = &*self.shared.snapshot;
        let mut loads = LoadCounters(snapshot);
        let now = self.clock.secs;
        if conn.flow.shard == self.shard.id() {
            let _ = self
                .shard
                .on_packet(conn.flow, Direction::Output, flags, now, &mut loads);
        } else {
            let _ =
                self.shard
                    .table()
                    .on_packet(conn.flow, Direction::Output, flags, now, &mut loads);
        }
        // Count the reply for its real server only while it exists: a removed server's slot
        // may belong to another one by now.
        if snapshot.dest(conn.dest).is_some() {
            let cells = &self.shared.counters.dests[dest_slot(conn.dest)];
            add(&cells.out_pkts, 1);
            add(&cells.out_bytes, bytes);
        }
    }

    /// Real server -> client, the reply of a NAT connection.
    fn outbound(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        conn: &Conn,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let flags = TcpFlags::from_byte(view.tcp_flags().map_or(0, |f| f.0));
        self.track_reply(conn, flags, u64::from(view.ip_total_len));
        let shared = &self.shared;
        let vip = socket(conn.vip);
        relay(shared, view.dst, ingress, view.src, |egress| {
            nat::rewrite_outbound(frame, view, vip, egress)
        })
    }

    /// An ICMP error about a connection: relayed to the side that sent the quoted packet.
    fn icmp_error(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let shared = &self.shared;
        let snapshot = &*shared.snapshot;
        let error: IcmpErrorView = match icmp::parse_error(frame, view) {
            Ok(e) => e,
            Err(reason) => return Ok(refuse(&shared.counters, reason)),
        };
        let quoted = error.flow;
        let (sender, receiver) = (*quoted.src.ip(), *quoted.dst.ip());
        if let Some(tunnel) = error.tunnel {
            // About one of our IPIP packets: IPVS tells the client, from the VIP.
            return self.answer_about_tunnel(
                (tunnel.source, tunnel.real_server),
                quoted.protocol,
                (sender, quoted.src.port()),
                (receiver, quoted.dst.port()),
                (ingress, view.src),
                |egress| icmp::answer_tunnel_error(frame, view, &error, egress),
            );
        }
        // The connection's own direction is the reverse of the quoted packet's.
        let key = FlowKey::new(
            Protocol::from_u8(quoted.protocol),
            endpoint(receiver, quoted.dst.port()),
            endpoint(sender, quoted.src.port()),
        );
        if snapshot
            .service_for(quoted.protocol, sender, quoted.src.port())
            .is_some()
        {
            // Quotes a reply VIP -> client: the connection is client -> VIP. The error's RSS
            // hash is not the flow's, so it may arrive on another worker: look in every shard.
            let conn = self
                .shard
                .table()
                .lookup_inbound_any(&key)
                .ok_or(Drop::IcmpNoConnection)?;
            let (_, dest, _) = snapshot.dest(conn.dest).ok_or(Drop::DestRemoved)?;
            if dest.spec.method != ForwardMethod::Masq {
                let method = dest.spec.method;
                return self.send_to(frame, view, conn.dest, method, conn.dest_addr, ingress);
            }
            let target = socket(conn.dest_addr);
            return relay(shared, *target.ip(), ingress, view.src, |egress| {
                icmp::rewrite_toward_real_server(frame, view, &error, target, egress)
            });
        }
        // Quotes client -> RIP from a NAT real server: the connection's reply key is RIP -> client.
        let conn = self
            .shard
            .table()
            .lookup_outbound(&key)
            .ok_or(Drop::IcmpNoConnection)?;
        let vip = socket(conn.vip);
        relay(shared, sender, ingress, view.src, |egress| {
            icmp::rewrite_toward_client(frame, view, &error, vip, egress)
        })
    }

    /// An ICMP error about one of the director's own tunnel packets (a router between it and
    /// a TUN real server with a smaller MTU), quoting the client's packet `client -> vip`
    /// inside: if the tunnel is ours (`tunnel`: its source and real server) and the flow a
    /// connection, `answer` turns the error into one from the VIP to the client, rate
    /// limited and counted as the director's own errors are. `arrival`: the ingress port
    /// and the error's sender.
    #[cold]
    fn answer_about_tunnel<A: Family + PartialEq + Into<IpAddr> + Into<xvs_conntrack::Addr>>(
        &mut self,
        tunnel: (A, A),
        protocol: u8,
        client: (A, u16),
        vip: (A, u16),
        arrival: (u8, A),
        answer: impl FnOnce(&Egress) -> Result<Transmit, Reason>,
    ) -> Result<Verdict, Drop> {
        let shared = &self.shared;
        let (source, real_server) = tunnel;
        if tunnel_source(shared, real_server) != Some(source) {
            return Err(Drop::IcmpNoConnection);
        }
        let key = FlowKey::new(
            Protocol::from_u8(protocol),
            Endpoint::new(client.0, client.1),
            Endpoint::new(vip.0, vip.1),
        );
        self.shard
            .table()
            .lookup_inbound_any(&key)
            .ok_or(Drop::IcmpNoConnection)?;
        if !shared.counters.icmp.allow(client.0) {
            return Err(Drop::IcmpRateLimited);
        }
        let verdict = relay(shared, client.0, arrival.0, arrival.1, answer)?;
        if verdict != Verdict::Drop {
            add(&shared.counters.icmp_sent, 1);
        }
        Ok(verdict)
    }
}

/// The master's half of IPVS's `ip_vs_sync_conn`, after an input packet's state update: if
/// the connection is due, it and its persistence template are queued for the sync thread.
#[inline]
fn sync_out(table: &ConnTable, port: &SyncPort, flow: FlowRef) {
    if !table.sync_due(flow, port.policy()) {
        return;
    }
    if let Some(entry) = table.export(flow) {
        port.send(entry);
    }
    if let Some(template) = table.template_of(flow).and_then(|t| table.export(t)) {
        port.send(template);
    }
}

/// Where [`Pipeline::place`] put an inbound packet.
enum Placed {
    /// Its connection (found or just opened): the real server and where packets go.
    Tracked {
        flow: FlowRef,
        dest: DestId,
        dest_addr: Endpoint,
    },
    /// A one-packet (`-o`) UDP datagram: scheduled on its own, no connection kept.
    OnePacket {
        dest: DestId,
        method: ForwardMethod,
        dest_addr: Endpoint,
    },
}

/// The generation part of a [`DestId`] (the part [`dest_slot`] leaves out).
#[inline(always)]
fn dest_tag(id: DestId) -> u16 {
    (id.0 >> 16) as u16
}

/// Stage 1 found no TCP/UDP tuple in the frame.
const NO_BUCKET: usize = usize::MAX;

impl Pipeline {
    /// Stage 1 for one frame: the inbound bucket of a TCP or UDP packet in an Ethernet/IPv4
    /// or IPv6 frame, read without any validation, its loading started; [`NO_BUCKET`] for
    /// any other frame (for prefetching only: [`parse`] decides what the frame is). An IPv4
    /// tuple is hashed from the header's bytes as they lie.
    #[inline(always)]
    fn quick_bucket(&self, data: &[u8]) -> usize {
        let Some(ip) = data.get(14..) else {
            return NO_BUCKET;
        };
        let Some(header) = ip.first_chunk::<20>() else {
            return NO_BUCKET;
        };
        if data[12] != 0x08 || data[13] != 0x00 {
            return if is_ipv6(data) {
                self.quick_bucket6(ip)
            } else {
                NO_BUCKET
            };
        }
        let protocol = match header[9] {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => return NO_BUCKET,
        };
        let header_len = usize::from(header[0] & 0x0f) * 4;
        let Some(ports) = ip.get(header_len..).and_then(|l4| l4.first_chunk::<4>()) else {
            return NO_BUCKET;
        };
        let [.., s0, s1, s2, s3, d0, d1, d2, d3] = *header;
        let addresses = u64::from_be_bytes([s0, s1, s2, s3, d0, d1, d2, d3]);
        self.shard
            .prefetch_inbound_v4(protocol, addresses, u32::from_be_bytes(*ports))
    }

    /// [`quick_bucket`](Self::quick_bucket) for the IPv6 datagram `ip`.
    #[inline(never)]
    fn quick_bucket6(&self, ip: &[u8]) -> usize {
        match quick_key6(ip) {
            Some(key) => self.shard.prefetch_inbound(&key),
            None => NO_BUCKET,
        }
    }
}

/// The inbound key of a TCP or UDP packet in the IPv6 datagram `ip` whose next header is TCP or UDP itself (with
/// extension headers, stage 1 leaves the frame to the full path's own lookup).
#[cold]
fn quick_key6(ip: &[u8]) -> Option<FlowKey> {
    let protocol = match *ip.get(6)? {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let ports = ip.get(40..44)?;
    let addr = |at: usize| {
        let octets: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
        xvs_conntrack::Addr::v6(octets)
    };
    Some(FlowKey::new(
        protocol,
        Endpoint::new(addr(8), u16::from_be_bytes([ports[0], ports[1]])),
        Endpoint::new(addr(24), u16::from_be_bytes([ports[2], ports[3]])),
    ))
}

/// Whether the frame's EtherType is IPv6's (0x86dd).
#[inline(always)]
fn is_ipv6(data: &[u8]) -> bool {
    data.get(12..14) == Some(&[0x86, 0xdd][..])
}

/// Counts one packet client -> real server.
#[inline]
fn count_in(counters: &WorkerCounters, dest: DestId, view: &PacketView) {
    count_in_len(counters, dest, view.ip_total_len.into());
}

/// Counts one packet of `len` IP bytes client -> real server.
#[inline]
fn count_in_len(counters: &WorkerCounters, dest: DestId, len: u64) {
    let cells = &counters.dests[dest_slot(dest)];
    add(&cells.in_pkts, 1);
    add(&cells.in_bytes, len);
}

/// The real server a new flow goes to: the one the client's persistence template names, if
/// it has one, else the scheduler's pick (recorded in a new template for persistent
/// services).
struct Choice {
    /// Index in the service's real servers.
    index: usize,
    /// Where packets go (real server address and port).
    dest_addr: Endpoint,
    /// The template that made the choice.
    template: Option<xvs_conntrack::TemplateRef>,
}

#[inline(always)]
fn choose(
    shard: &mut Shard,
    scheduler: &mut dyn Scheduler,
    service: &Service,
    key: &FlowKey,
    request: &Request,
    now: Secs,
    loads: &mut LoadCounters<'_>,
) -> Result<Choice, Drop> {
    let snapshot = loads.0;
    let endpoint_of = |index: usize| {
        let dest = &service.dests[index];
        let addr = conntrack_addr(dest.spec.addr);
        Endpoint::new(addr, real_port(dest.spec.port, key.dst.port))
    };
    let Some(persistence) = service.persistence else {
        let index = scheduler
            .pick(&service.servers, request)
            .ok_or(Drop::NoDestAvailable)?;
        return Ok(Choice {
            index,
            dest_addr: endpoint_of(index),
            template: None,
        });
    };
    let template_key = TemplateKey::new(&service.key, key.src.addr, persistence.mask);
    let template = match shard.table().find_template(&template_key, snapshot) {
        Some(t) => t,
        None => {
            let index = scheduler
                .pick(&service.servers, request)
                .ok_or(Drop::NoDestAvailable)?;
            let dest = &service.dests[index];
            // The template keeps the configured port: 0 on a port-0 service means "the
            // port each connection asks for".
            let addr = Endpoint::new(conntrack_addr(dest.spec.addr), dest.spec.port);
            shard
                .insert_template(
                    &template_key,
                    dest.id,
                    addr,
                    persistence.timeout,
                    now,
                    loads,
                )
                .map_err(|_| Drop::TableFull)?
        }
    };
    let index = service
        .dests
        .iter()
        .position(|d| d.id == template.dest)
        .ok_or(Drop::DestRemoved)?;
    let port = real_port(template.dest_addr.port, key.dst.port);
    Ok(Choice {
        index,
        dest_addr: Endpoint::new(template.dest_addr.addr, port),
        template: Some(template),
    })
}

/// The packet that opens a connection: its tuple, the inbound bucket the tuple hashes to,
/// and its TCP flags.
struct Opening<'a> {
    key: &'a FlowKey,
    bucket: usize,
    flags: TcpFlags,
}

/// A new connection for `opening`'s tuple, to the real server [`choose`] gives, with the
/// opening packet applied: its handle, real server and where packets go.
#[inline(always)]
fn open(
    shard: &mut Shard,
    scheduler: &mut dyn Scheduler,
    service: &Service,
    opening: &Opening<'_>,
    request: &Request,
    now: Secs,
    loads: &mut LoadCounters<'_>,
) -> Result<(FlowRef, DestId, Endpoint), Drop> {
    let &Opening { key, bucket, flags } = opening;
    let choice = choose(shard, scheduler, service, key, request, now, loads)?;
    let dest = service.dests[choice.index].id;
    let return_path = match service.dests[choice.index].spec.method {
        ForwardMethod::Masq => ReturnPath::ViaDirector,
        ForwardMethod::Route | ForwardMethod::Tunnel => ReturnPath::Bypass,
    };
    let (dest_addr, template) = (choice.dest_addr, choice.template);
    let new = NewConn {
        key: *key,
        dest,
        dest_addr,
        return_path,
        template,
    };
    // The lookup just missed, and only this worker inserts into its shard.
    let flow = match shard.open_missing(&new, bucket, flags, now, loads) {
        Ok(flow) => flow,
        Err(InsertError::Full) => return Err(Drop::TableFull),
        // The template expired between lookup and attach: keep its choice, unattached.
        Err(InsertError::TemplateGone) => {
            let retry = NewConn {
                template: None,
                ..new
            };
            shard
                .open_missing(&retry, bucket, flags, now, loads)
                .map_err(|_| Drop::TableFull)?
        }
        Err(InsertError::Exists) => return Err(Drop::NoConnection),
    };
    Ok((flow, dest, dest_addr))
}

/// Sends the frame to real server `dest` at `target` by `method`: the hop from the cache,
/// then [`forward`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn send_to_dest(
    shared: &Shared,
    egress: &mut EgressCache<Ipv4Addr>,
    tunnel_ident: &mut u16,
    frame: &mut Frame<'_>,
    view: &PacketView,
    dest: DestId,
    method: ForwardMethod,
    target: SocketAddrV4,
    ingress: u8,
) -> Result<Verdict, Drop> {
    let hop = egress.hop(shared, dest, method, *target.ip())?;
    Ok(forward(
        shared,
        tunnel_ident,
        frame,
        view,
        method,
        target,
        hop,
        ingress,
    ))
}

/// Rewrites for the real server's forwarding method toward `target`, leaving by `hop`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward(
    shared: &Shared,
    tunnel_ident: &mut u16,
    frame: &mut Frame<'_>,
    view: &PacketView,
    method: ForwardMethod,
    target: SocketAddrV4,
    hop: Hop<Ipv4Addr>,
    ingress: u8,
) -> Verdict {
    let counters = &*shared.counters;
    if hop.local {
        let start = usize::from(view.ip_offset);
        return deliver_locally(shared, frame, start..start + usize::from(view.ip_total_len));
    }
    let result = match method {
        ForwardMethod::Tunnel => match hop.tunnel_source {
            Some(source) => {
                *tunnel_ident = tunnel_ident.wrapping_add(1);
                let tunnel = Tunnel {
                    source,
                    real_server: *target.ip(),
                    ident: *tunnel_ident,
                };
                tun::encapsulate_common(frame, view, &tunnel, &hop.egress)
            }
            None => {
                counters.drop(Drop::NoRoute);
                return Verdict::Drop;
            }
        },
        ForwardMethod::Masq => nat::rewrite_inbound_common(frame, view, target, &hop.egress),
        ForwardMethod::Route => dr::forward(frame, view, &hop.egress),
    };
    finish(counters, result, hop.port, ingress, view.src)
}

/// A packet for a local real server: its IP datagram, unchanged (still to VIP:port, as IPVS
/// delivers it), goes to the director's kernel; the frame's memory is reused.
#[cold]
fn deliver_locally(
    shared: &Shared,
    frame: &Frame<'_>,
    datagram: std::ops::Range<usize>,
) -> Verdict {
    let counters = &*shared.counters;
    let delivered = match (shared.local.get(), frame.data().get(datagram)) {
        (Some(local), Some(packet)) => local.deliver(packet).is_ok(),
        _ => false,
    };
    if delivered {
        add(&counters.local_delivered, 1);
    } else {
        counters.drop(Drop::LocalDeliveryFailed);
    }
    Verdict::Drop
}

/// Looks the egress toward `to` up, lets `rewrite` build the frame for it, and turns the
/// result into a verdict (see [`finish`]; `sender` sent the packet being rewritten).
#[inline]
fn relay<A: Family>(
    shared: &Shared,
    to: A,
    ingress: u8,
    sender: A,
    rewrite: impl FnOnce(&Egress) -> Result<Transmit, Reason>,
) -> Result<Verdict, Drop> {
    let (port, egress) = egress_to(shared, to)?;
    Ok(finish(
        &shared.counters,
        rewrite(&egress),
        port,
        ingress,
        sender,
    ))
}

/// The outer source of tunnels to `real_server`: the configured one, else, as IPVS takes the
/// route's preferred source, the address of the egress link's network holding the next hop.
#[inline]
fn tunnel_source<A: Family>(shared: &Shared, real_server: A) -> Option<A> {
    A::configured_source(shared).or_else(|| {
        let (port, _) = real_server.next_hop(&shared.routes)?;
        real_server.source_on(shared.routes.link(port)?)
    })
}

/// The egress port and link parameters toward `dst`'s next hop.
#[inline]
fn egress_to<A: Family>(shared: &Shared, dst: A) -> Result<(u8, Egress), Drop> {
    let (port, hop) = dst.next_hop(&shared.routes).ok_or(Drop::NoRoute)?;
    let link = shared.routes.link(port).ok_or(Drop::NoRoute)?;
    match hop.neighbour(&shared.neighbours, port) {
        Some(mac) => Ok((
            port,
            Egress {
                src_mac: link.mac,
                dst_mac: mac,
                mtu: link.mtu,
            },
        )),
        None => {
            // The side thread resolves it; a full queue means it is busy resolving already.
            let _ = shared.resolve.push((port, hop.into()));
            Err(Drop::NeighbourUnresolved)
        }
    }
}

/// Turns a rewrite result into a verdict: forward on `port`, or return an ICMP error the
/// forwarders built to `sender` on the ingress port, if its rate limit allows.
#[inline]
fn finish(
    counters: &WorkerCounters,
    result: Result<Transmit, Reason>,
    port: u8,
    ingress: u8,
    sender: impl Into<IpAddr>,
) -> Verdict {
    match result {
        Ok(Transmit::Forward) => Verdict::Transmit { port },
        Ok(Transmit::FragmentationNeededToSender | Transmit::TimeExceededToSender) => {
            if !counters.icmp.allow(sender) {
                counters.drop(Drop::IcmpRateLimited);
                return Verdict::Drop;
            }
            add(&counters.icmp_sent, 1);
            Verdict::Transmit { port: ingress }
        }
        Err(reason) => refuse(counters, reason),
    }
}

#[inline]
fn refuse(counters: &WorkerCounters, reason: Reason) -> Verdict {
    counters.refuse(reason);
    Verdict::Drop
}

fn build_scheduler(service: &Service, options: &SchedOptions) -> Box<dyn Scheduler> {
    // The snapshot only holds validated specs, so this cannot fail; fall back to IPVS's default.
    xvs_sched::new_scheduler(&service.spec.scheduler, options, &service.servers).unwrap_or_else(
        |_| {
            let mut wlc: Box<dyn Scheduler> =
                Box::new(xvs_sched::schedulers::wlc::WeightedLeastConnection);
            wlc.update(&service.servers);
            wlc
        },
    )
}

/// The port packets go to on the real server: its own, or for port-0 real servers (and
/// port-0 persistent services) the port the client asked for.
#[inline]
fn real_port(dest_port: u16, requested: u16) -> u16 {
    if dest_port == 0 { requested } else { dest_port }
}

#[inline]
fn endpoint(addr: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint::new(xvs_conntrack::Addr::v4(addr.octets()), port)
}

/// An endpoint as a socket address (the data path carries IPv4 only).
#[inline]
fn socket(endpoint: Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(v4(endpoint.addr.to_ip()), endpoint.port)
}

/// IPv4 part of an address the snapshot guarantees is IPv4.
#[inline]
fn v4(addr: std::net::IpAddr) -> Ipv4Addr {
    match addr {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}
