//! The sharded connection table: [`ConnTable`] (shared by all workers) and [`Shard`] (owned by
//! one worker).
//!
//! ## Concurrency design
//! Each worker owns one shard and is its only writer: it creates the flows it schedules,
//! links and unlinks them, and runs their expiry. Other workers need two things from a shard
//! they do not own, and get both without a lock:
//! - **lookups** (NAT replies arriving on another queue, persistence templates): the shard's
//!   indexes are chained hash tables of atomics guarded by striped sequence counters (see
//!   [`crate::index`]); readers retry if the owner changed the chain under them and never
//!   write, so N readers scale like one;
//! - **state updates** (a NAT reply's FIN, a timer refresh, a template's refresh and its
//!   `n_control`): the mutable part of an entry is one 64-bit word changed by CAS, so two
//!   workers updating the same flow agree on one sequence of states and the counter events of
//!   each crossing are reported once, by the thread whose CAS made it. A shortened deadline
//!   found by a non-owner is passed to the owner through a bounded lock-free queue.
//!
//! ## A full table
//! Each shard has a fixed number of slots (`max_entries / shards`, allocated up front, so
//! memory is bounded and the hot path never allocates). When no slot is free a new flow is
//! **refused and counted** ([`ShardStats::refused`]); nothing is evicted. The reasons: the
//! usual cause of a full table is a SYN flood, and evicting "the oldest idle" entry under a
//! flood would throw out established flows to make room for spoofed ones, while refusing keeps
//! every existing flow working (the requirement) and mirrors IPVS/DPVS, which fail the
//! allocation ("no memory for connection"). Refused SYNs are retried by real clients; idle
//! entries still leave on their own timers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;

use crate::dest::{DestCounters, DestId, DestStatus};
use crate::entry::{Meta, Slot, StateWord, control, flag, kind};
use crate::hash::{hash_words, random_seed};
use crate::index::ChainIndex;
use crate::key::{Addr, Endpoint, Family, FlowKey, Protocol};
use crate::state::{Direction, ReturnPath, TableSet, TcpFlags, TcpState, select_table, transition};
use crate::template::TemplateKey;
use crate::timeouts::{NEW_CONN_TIMEOUT, Secs, TEMPLATE_BUSY_RETRY, Timeouts};
use crate::wheel::Wheel;

/// IPVS behaviour switches (sysctls), changeable at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `expire_nodest_conn`: a packet for a connection whose real server was removed expires
    /// the connection at once and is scheduled anew; when off, such packets are dropped and
    /// the connection ages out on its timer.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`: a template whose real server has weight 0 is invalidated
    /// on its next use, so new connections of that client are scheduled afresh.
    pub expire_quiescent_template: bool,
    /// `secure_tcp`: use IPVS's hardened state tables.
    pub secure_tcp: bool,
}

/// How to build a table.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// One per worker.
    pub shards: usize,
    /// Maximum entries (connections and templates) over all shards, split evenly.
    pub max_entries: usize,
    pub options: Options,
    /// Hash seed; `None` draws a random one (the default, against hash flooding).
    pub seed: Option<u64>,
    /// The clock value at creation (where the expiry wheels start).
    pub now: Secs,
}

impl Config {
    pub fn new(shards: usize, max_entries: usize) -> Self {
        Config {
            shards,
            max_entries,
            options: Options::default(),
            seed: None,
            now: 0,
        }
    }
}

/// A handle to a connection or template: its shard, slot and the slot's generation, so a
/// handle outliving its entry fails cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// A copy of a connection as found by a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub flow: FlowRef,
    pub proto: Protocol,
    pub client: Endpoint,
    /// The virtual service address the client talks to.
    pub vip: Endpoint,
    /// The real server address packets are forwarded to.
    pub dest_addr: Endpoint,
    pub dest: DestId,
    pub state: TcpState,
    /// Counted in ActiveConn (else InActConn).
    pub active: bool,
    pub return_path: ReturnPath,
    /// Clock value at which the entry expires unless refreshed.
    pub expires: Secs,
    /// Controlled by a persistence template.
    pub persistent: bool,
}

/// A persistence template found or created for a client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    pub flow: FlowRef,
    pub dest: DestId,
    pub dest_addr: Endpoint,
    pub expires: Secs,
}

/// Result of an inbound lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    Hit(Conn),
    /// No connection: schedule the packet as a new one. Also returned after an
    /// `expire_nodest_conn` expiry.
    Miss,
    /// The connection's real server is gone and `expire_nodest_conn` is off: drop the packet
    /// silently and leave the timer alone (IPVS).
    Drop,
}

/// Why a connection or template was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The shard has no free slot; the flow is refused (counted).
    Full,
    /// A connection with this inbound key exists already.
    Exists,
    /// The template to attach to expired or was invalidated meanwhile; schedule again.
    TemplateGone,
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InsertError::Full => "connection table full",
            InsertError::Exists => "connection exists",
            InsertError::TemplateGone => "persistence template gone",
        })
    }
}

impl std::error::Error for InsertError {}

/// The handle no longer names a live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;

/// A new connection, as decided by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// The first packet's tuple: client -> virtual service.
    pub key: FlowKey,
    pub dest: DestId,
    pub dest_addr: Endpoint,
    pub return_path: ReturnPath,
    /// The persistence template that chose `dest`, if any.
    pub template: Option<TemplateRef>,
}

/// Counters of one shard (monotonic except the two gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Live connections (gauge).
    pub conns: u64,
    /// Live templates (gauge).
    pub templates: u64,
    /// New connections or templates refused because the shard was full.
    pub refused: u64,
    /// Entries removed by their timer.
    pub expired: u64,
    /// Connections expired by `expire_nodest_conn`.
    pub nodest_expired: u64,
    /// Deadline shortenings reported by other workers that did not fit the queue (those
    /// entries expire at their older, later deadline).
    pub retime_dropped: u64,
}

#[derive(Debug, Default)]
struct AtomicStats {
    conns: AtomicU64,
    templates: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    nodest_expired: AtomicU64,
    retime_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn drop_one(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

/// The part of a shard every worker may read.
#[derive(Debug)]
struct ShardShared {
    slots: Box<[Slot]>,
    inbound: ChainIndex,
    outbound: ChainIndex,
    templates: ChainIndex,
    /// `(slot, generation)` of entries whose deadline another worker shortened.
    retime: ArrayQueue<u64>,
    stats: CachePadded<AtomicStats>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[ShardShared]>,
    timeouts: Timeouts,
    seed: u64,
    expire_nodest_conn: AtomicBool,
    expire_quiescent_template: AtomicBool,
    secure_tcp: AtomicBool,
}

/// The table as every worker sees it (cheap to clone).
#[derive(Clone, Debug)]
pub struct ConnTable {
    inner: Arc<Inner>,
}

/// One worker's shard: the only place connections are created, removed and expired.
#[derive(Debug)]
pub struct Shard {
    table: ConnTable,
    id: u16,
    wheel: Wheel,
    free: Vec<u32>,
    next_unused: u32,
    capacity: u32,
}

// ---- hashing of the three keys ------------------------------------------------------------

#[inline]
fn family_bit(f: Family) -> u64 {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Hash of (proto, family, a, a_port, b, b_port). Inbound uses (client, vip), outbound
/// (real server, client), templates (client net, service).
#[inline]
fn tuple_hash(seed: u64, proto: u8, family: Family, a: u128, ap: u16, b: u128, bp: u16) -> u64 {
    let tail = (ap as u64) << 32 | (bp as u64) << 16 | (proto as u64) << 8 | family_bit(family);
    match family {
        Family::V4 => hash_words(seed, &[(a as u64) << 32 | (b as u64 & 0xffff_ffff), tail]),
        Family::V6 => hash_words(
            seed,
            &[a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64, tail],
        ),
    }
}

fn kind_of(family: Family) -> u8 {
    match family {
        Family::V4 => 0,
        Family::V6 => kind::V6,
    }
}

fn template_proto_byte(key: &TemplateKey) -> u8 {
    key.proto.map_or(0, |p| p as u8)
}

impl ShardShared {
    fn new(capacity: usize) -> Self {
        ShardShared {
            slots: crate::memory::zeroed_slice(capacity),
            inbound: ChainIndex::new(capacity),
            outbound: ChainIndex::new(capacity),
            templates: ChainIndex::new(capacity / 8),
            retime: ArrayQueue::new(capacity.clamp(64, 16 * 1024)),
            stats: CachePadded::new(AtomicStats::default()),
        }
    }

    fn stats(&self) -> ShardStats {
        let s = &self.stats;
        ShardStats {
            conns: s.conns.load(Ordering::Relaxed),
            templates: s.templates.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            nodest_expired: s.nodest_expired.load(Ordering::Relaxed),
            retime_dropped: s.retime_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Reads a connection slot into a [`Conn`] (the caller has matched its key).
fn snapshot(shard: u16, index: u32, slot: &Slot, word: StateWord, meta: Meta) -> Conn {
    let family = meta.family();
    Conn {
        flow: FlowRef {
            shard,
            slot: index,
            generation: word.generation(),
        },
        proto: meta.protocol(),
        client: slot.endpoint(&slot.caddr, meta.cport(), family),
        vip: slot.endpoint(&slot.vaddr, meta.vport(), family),
        dest_addr: slot.endpoint(&slot.daddr, meta.dport(), family),
        dest: DestId(slot.dest.load(Ordering::Relaxed)),
        state: word.state(),
        active: !word.has(flag::INACTIVE),
        return_path: if meta.is(kind::VIA_DIRECTOR) {
            ReturnPath::ViaDirector
        } else {
            ReturnPath::Bypass
        },
        expires: word.deadline(),
        persistent: slot.control.load(Ordering::Relaxed) != 0,
    }
}

/// Does `slot` hold the connection a packet `key` (client -> vip) belongs to?
#[inline]
fn matches_inbound(slot: &Slot, meta: Meta, key: &FlowKey, kind_v6: u8) -> bool {
    meta.kind() & (kind::TEMPLATE | kind::V6) == kind_v6
        && meta.cport() == key.src.port
        && meta.vport() == key.dst.port
        && meta.proto_byte() == key.proto as u8
        && slot.caddr.equals(key.src.addr.bits())
        && slot.vaddr.equals(key.dst.addr.bits())
}

/// Does `slot` hold the NAT connection a reply `key` (real server -> client) belongs to?
#[inline]
fn matches_outbound(slot: &Slot, meta: Meta, key: &FlowKey, kind_v6: u8) -> bool {
    meta.kind() & (kind::TEMPLATE | kind::V6 | kind::VIA_DIRECTOR) == kind_v6 | kind::VIA_DIRECTOR
        && meta.dport() == key.src.port
        && meta.cport() == key.dst.port
        && meta.proto_byte() == key.proto as u8
        && slot.daddr.equals(key.src.addr.bits())
        && slot.caddr.equals(key.dst.addr.bits())
}

fn matches_template(slot: &Slot, meta: Meta, key: &TemplateKey) -> bool {
    let want_kind = kind::TEMPLATE
        | kind_of(key.client_net.family())
        | if key.proto.is_none() { kind::FWMARK } else { 0 };
    meta.kind() & (kind::TEMPLATE | kind::V6 | kind::FWMARK) == want_kind
        && meta.vport() == key.vport
        && meta.proto_byte() == template_proto_byte(key)
        && slot.caddr.equals(key.client_net.bits())
        && slot.vaddr.equals(key.service_addr.bits())
}

/// Keys whose memory accesses a batch lookup overlaps.
const BATCH_GROUP: usize = 16;

/// Starts loading every cache line an 88-byte slot may span (it is not line-aligned).
#[inline]
fn prefetch_slot(slot: &Slot) {
    let base = slot as *const Slot as *const u8;
    crate::memory::prefetch(base);
    crate::memory::prefetch(base.wrapping_add(48));
    crate::memory::prefetch(base.wrapping_add(87));
}

/// What a packet did to a connection's state word.
struct Applied {
    state: TcpState,
    /// The deadline moved earlier than before (the owner's wheel may need to know).
    shortened: bool,
}

impl ConnTable {
    /// Builds a table and its shards; hand one [`Shard`] to each worker and keep clones of
    /// the [`ConnTable`] wherever lookups are needed.
    pub fn new(config: Config) -> (ConnTable, Vec<Shard>) {
        let shards = config.shards.clamp(1, u16::MAX as usize);
        let per_shard = config
            .max_entries
            .div_ceil(shards)
            .clamp(1, u32::MAX as usize - 1);
        let inner = Inner {
            shards: (0..shards).map(|_| ShardShared::new(per_shard)).collect(),
            timeouts: Timeouts::default(),
            seed: config.seed.unwrap_or_else(random_seed),
            expire_nodest_conn: AtomicBool::new(config.options.expire_nodest_conn),
            expire_quiescent_template: AtomicBool::new(config.options.expire_quiescent_template),
            secure_tcp: AtomicBool::new(config.options.secure_tcp),
        };
        let table = ConnTable {
            inner: Arc::new(inner),
        };
        let owners = (0..shards)
            .map(|id| Shard {
                table: table.clone(),
                id: id as u16,
                wheel: Wheel::new(per_shard, config.now),
                free: Vec::new(),
                next_unused: 0,
                capacity: per_shard as u32,
            })
            .collect();
        (table, owners)
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The live timeouts (`--set` goes through [`Timeouts::set`]).
    pub fn timeouts(&self) -> &Timeouts {
        &self.inner.timeouts
    }

    pub fn options(&self) -> Options {
        Options {
            expire_nodest_conn: self.inner.expire_nodest_conn.load(Ordering::Relaxed),
            expire_quiescent_template: self.inner.expire_quiescent_template.load(Ordering::Relaxed),
            secure_tcp: self.inner.secure_tcp.load(Ordering::Relaxed),
        }
    }

    pub fn set_options(&self, o: Options) {
        let i = &self.inner;
        i.expire_nodest_conn
            .store(o.expire_nodest_conn, Ordering::Relaxed);
        i.expire_quiescent_template
            .store(o.expire_quiescent_template, Ordering::Relaxed);
        i.secure_tcp.store(o.secure_tcp, Ordering::Relaxed);
    }

    fn table_set(&self) -> TableSet {
        if self.inner.secure_tcp.load(Ordering::Relaxed) {
            TableSet::Secure
        } else {
            TableSet::Normal
        }
    }

    fn shard(&self, id: u16) -> &ShardShared {
        &self.inner.shards[id as usize]
    }

    fn slot(&self, flow: FlowRef) -> Option<&Slot> {
        self.inner
            .shards
            .get(flow.shard as usize)?
            .slots
            .get(flow.slot as usize)
    }

    /// Statistics of one shard.
    pub fn shard_stats(&self, shard: u16) -> ShardStats {
        self.shard(shard).stats()
    }

    /// Statistics summed over all shards.
    pub fn stats(&self) -> ShardStats {
        self.inner
            .shards
            .iter()
            .map(ShardShared::stats)
            .fold(ShardStats::default(), |a, b| ShardStats {
                conns: a.conns + b.conns,
                templates: a.templates + b.templates,
                refused: a.refused + b.refused,
                expired: a.expired + b.expired,
                nodest_expired: a.nodest_expired + b.nodest_expired,
                retime_dropped: a.retime_dropped + b.retime_dropped,
            })
    }

    #[inline]
    fn outbound_hash(&self, key: &FlowKey) -> u64 {
        tuple_hash(
            self.inner.seed,
            key.proto as u8,
            key.family(),
            key.src.addr.bits(),
            key.src.port,
            key.dst.addr.bits(),
            key.dst.port,
        )
    }

    #[inline]
    fn inbound_hash(&self, key: &FlowKey) -> u64 {
        tuple_hash(
            self.inner.seed,
            key.proto as u8,
            key.family(),
            key.src.addr.bits(),
            key.src.port,
            key.dst.addr.bits(),
            key.dst.port,
        )
        .rotate_left(17)
    }

    fn template_hash(&self, key: &TemplateKey) -> u64 {
        tuple_hash(
            self.inner.seed,
            template_proto_byte(key),
            key.client_net.family(),
            key.client_net.bits(),
            0,
            key.service_addr.bits(),
            key.vport,
        )
        .rotate_left(41)
    }

    /// NAT return traffic: finds the connection a reply `real server -> client` belongs to,
    /// in any shard, from any worker, without a lock.
    #[inline]
    pub fn lookup_outbound(&self, key: &FlowKey) -> Option<Conn> {
        let hash = self.outbound_hash(key);
        // The reply may belong to any shard: start loading every shard's bucket at once, so
        // a miss costs about one memory latency rather than one per shard.
        if self.inner.shards.len() > 1 {
            for shard in self.inner.shards.iter() {
                shard.outbound.prefetch_bucket(shard.outbound.bucket(hash));
            }
        }
        self.lookup_outbound_hashed(key, hash)
    }

    #[inline]
    fn lookup_outbound_hashed(&self, key: &FlowKey, hash: u64) -> Option<Conn> {
        let kind_v6 = kind_of(key.family());
        for (id, shard) in self.inner.shards.iter().enumerate() {
            let bucket = shard.outbound.bucket(hash);
            let slots = &shard.slots;
            let hit = shard.outbound.find_shared(
                bucket,
                |s| &slots[s as usize].next_outbound,
                |s| {
                    let slot = &slots[s as usize];
                    let meta = slot.meta();
                    if !matches_outbound(slot, meta, key, kind_v6) {
                        return None;
                    }
                    let word = slot.word();
                    (!word.has(flag::DEAD)).then(|| snapshot(id as u16, s, slot, word, meta))
                },
            );
            if hit.is_some() {
                return hit;
            }
        }
        None
    }

    /// Batch form of [`lookup_outbound`](Self::lookup_outbound): `out[i]` answers `keys[i]`,
    /// with the memory accesses of a group of keys overlapped (see
    /// [`Shard::lookup_inbound_batch`]).
    pub fn lookup_outbound_batch(&self, keys: &[FlowKey], out: &mut [Option<Conn>]) {
        let mut hashes = [0u64; BATCH_GROUP];
        for (keys, out) in keys.chunks(BATCH_GROUP).zip(out.chunks_mut(BATCH_GROUP)) {
            for (key, hash) in keys.iter().zip(hashes.iter_mut()) {
                *hash = self.outbound_hash(key);
                for shard in self.inner.shards.iter() {
                    shard.outbound.prefetch_bucket(shard.outbound.bucket(*hash));
                }
            }
            for &hash in &hashes[..keys.len()] {
                for shard in self.inner.shards.iter() {
                    if let Some(first) = shard.outbound.head(shard.outbound.bucket(hash)) {
                        prefetch_slot(&shard.slots[first as usize]);
                    }
                }
            }
            for ((key, res), &hash) in keys.iter().zip(out.iter_mut()).zip(&hashes) {
                *res = self.lookup_outbound_hashed(key, hash);
            }
        }
    }

    /// The current state of a connection, if the handle is still live.
    pub fn get(&self, flow: FlowRef) -> Option<Conn> {
        let slot = self.slot(flow)?;
        let word = slot.word();
        if word.generation() != flow.generation || word.has(flag::DEAD) {
            return None;
        }
        let meta = slot.meta();
        if meta.is(kind::TEMPLATE) {
            return None;
        }
        let conn = snapshot(flow.shard, flow.slot, slot, word, meta);
        // Re-check, seqlock style: the slot must not have been killed (and reused) while it
        // was read. The fence orders the field reads above before the second word read.
        fence(Ordering::Acquire);
        (StateWord(slot.word.load(Ordering::Relaxed)).generation() == flow.generation)
            .then_some(conn)
    }

    /// Persistence: the template for `key`, from any shard. Applies IPVS's
    /// `ip_vs_check_template`: a template whose real server is unavailable, or quiescent with
    /// `expire_quiescent_template` on, is invalidated (never matched again; it still expires
    /// on its timer) and `None` is returned so the connection is scheduled afresh.
    pub fn find_template(
        &self,
        key: &TemplateKey,
        status: &impl DestStatus,
    ) -> Option<TemplateRef> {
        let hash = self.template_hash(key);
        for (id, shard) in self.inner.shards.iter().enumerate() {
            let bucket = shard.templates.bucket(hash);
            let slots = &shard.slots;
            let hit = shard.templates.find_shared(
                bucket,
                |s| &slots[s as usize].next_primary,
                |s| {
                    let slot = &slots[s as usize];
                    let meta = slot.meta();
                    if !matches_template(slot, meta, key) {
                        return None;
                    }
                    let word = slot.word();
                    if word.has(flag::DEAD | flag::INVALID) {
                        return None;
                    }
                    let family = meta.family();
                    Some(TemplateRef {
                        flow: FlowRef {
                            shard: id as u16,
                            slot: s,
                            generation: word.generation(),
                        },
                        dest: DestId(slot.dest.load(Ordering::Relaxed)),
                        dest_addr: slot.endpoint(&slot.daddr, meta.dport(), family),
                        expires: word.deadline(),
                    })
                },
            );
            let Some(t) = hit else { continue };
            let quiescent_expires = self.inner.expire_quiescent_template.load(Ordering::Relaxed)
                && status.is_quiescent(t.dest);
            if !status.is_available(t.dest) || quiescent_expires {
                self.invalidate_template(t.flow);
                return None;
            }
            return Some(t);
        }
        None
    }

    fn invalidate_template(&self, flow: FlowRef) {
        let Some(slot) = self.slot(flow) else { return };
        let mut word = slot.word();
        while word.generation() == flow.generation && !word.has(flag::DEAD | flag::INVALID) {
            let invalid = word.with(word.deadline(), word.state(), word.flags() | flag::INVALID);
            match slot.cas_word(word, invalid) {
                Ok(()) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Attaches a new connection to its template: IPVS `ip_vs_control_add` (n_control += 1)
    /// and `ip_vs_conn_put(ct)` (the template's timer restarts with its own timeout).
    fn attach_template(&self, t: &TemplateRef, now: Secs) -> Result<u64, InsertError> {
        let slot = self.slot(t.flow).ok_or(InsertError::TemplateGone)?;
        let mut ctl = slot.control.load(Ordering::Acquire);
        loop {
            if control::generation(ctl) != Some(t.flow.generation) {
                return Err(InsertError::TemplateGone);
            }
            match slot.control.compare_exchange_weak(
                ctl,
                ctl + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(c) => ctl = c,
            }
        }
        let deadline = now.saturating_add(slot.aux.load(Ordering::Relaxed));
        let mut word = slot.word();
        while word.deadline() < deadline && !word.has(flag::DEAD) {
            match slot.cas_word(word, word.with(deadline, word.state(), word.flags())) {
                Ok(()) => break,
                Err(w) => word = w,
            }
        }
        Ok(control::template_ref(t.flow.shard, t.flow.slot))
    }

    /// Feeds one packet of a connection to the state machine and restarts its timer, from any
    /// worker (use [`Shard::on_packet`] on the owner: it re-files shortened timers directly).
    /// Returns the state after the packet.
    pub fn on_packet(
        &self,
        flow: FlowRef,
        direction: Direction,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<TcpState, Gone> {
        let applied = self.apply_packet(flow, direction, flags, now, counters)?;
        if applied.shortened {
            let shard = self.shard(flow.shard);
            let msg = (flow.slot as u64) << 32 | flow.generation as u64;
            if shard.retime.push(msg).is_err() {
                bump(&shard.stats.retime_dropped);
            }
        }
        Ok(applied.state)
    }

    /// The IPVS per-packet step (`set_tcp_state` for TCP, `udp_state_transition` for UDP):
    /// next state from the tables, ActiveConn/InActConn crossing, new deadline.
    fn apply_packet(
        &self,
        flow: FlowRef,
        direction: Direction,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Applied, Gone> {
        let slot = self.slot(flow).ok_or(Gone)?;
        let set = self.table_set();
        let mut word = slot.word();
        loop {
            if word.generation() != flow.generation || word.has(flag::DEAD) {
                return Err(Gone);
            }
            let meta = slot.meta();
            if meta.is(kind::TEMPLATE) {
                return Err(Gone);
            }
            let proto = meta.protocol();
            let current = word.state();
            let mut flags_now = word.flags();
            let next = match proto {
                Protocol::Tcp => {
                    // IPVS: NOOUTPUT selects INPUT-ONLY for input packets; the first output
                    // packet clears it for good.
                    let (table, no_output) = select_table(direction, word.has(flag::NO_OUTPUT));
                    if !no_output {
                        flags_now &= !flag::NO_OUTPUT;
                    }
                    transition(set, table, flags, current)
                }
                // UDP and ICMP have one state; a packet only restarts the timer.
                Protocol::Udp | Protocol::Icmp => current,
            };
            // IPVS set_tcp_state: on a state change, a connection crosses the INACTIVE
            // boundary when the active table says so, and the dest counters follow.
            let mut crossing = None;
            if next != current {
                let inactive = word.has(flag::INACTIVE);
                if !inactive && !next.is_active() {
                    flags_now |= flag::INACTIVE;
                    crossing = Some(false);
                } else if inactive && next.is_active() {
                    flags_now &= !flag::INACTIVE;
                    crossing = Some(true);
                }
            }
            let deadline = now.saturating_add(self.inner.timeouts.for_state(proto, next));
            let new = word.with(deadline, next, flags_now);
            if new == word {
                return Ok(Applied {
                    state: next,
                    shortened: false,
                });
            }
            let dest = DestId(slot.dest.load(Ordering::Relaxed));
            match slot.cas_word(word, new) {
                Ok(()) => {
                    match crossing {
                        Some(true) => counters.conn_activated(dest),
                        Some(false) => counters.conn_deactivated(dest),
                        None => {}
                    }
                    return Ok(Applied {
                        state: next,
                        shortened: deadline < word.deadline(),
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }
}

impl Shard {
    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn table(&self) -> &ConnTable {
        &self.table
    }

    /// Slots in this shard (its share of `max_entries`).
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Live entries (connections and templates).
    pub fn len(&self) -> usize {
        self.next_unused as usize - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> ShardStats {
        self.shared().stats()
    }

    fn shared(&self) -> &ShardShared {
        self.table.shard(self.id)
    }

    #[inline]
    fn inbound_bucket(&self, key: &FlowKey) -> usize {
        self.shared().inbound.bucket(self.table.inbound_hash(key))
    }

    fn find_inbound(&self, key: &FlowKey) -> Option<u32> {
        self.find_inbound_at(self.inbound_bucket(key), key)
    }

    #[inline]
    fn find_inbound_at(&self, bucket: usize, key: &FlowKey) -> Option<u32> {
        let shared = self.shared();
        let slots = &shared.slots;
        let kind_v6 = kind_of(key.family());
        shared.inbound.find_owned(
            bucket,
            |s| &slots[s as usize].next_primary,
            |s| {
                let slot = &slots[s as usize];
                matches_inbound(slot, slot.meta(), key, kind_v6).then_some(s)
            },
        )
    }

    /// A packet from a client to a virtual service: the connection it belongs to, if any.
    ///
    /// IPVS's check of the server status happens here: if the connection's real server is no
    /// longer available, `expire_nodest_conn` expires the connection now and reports a miss
    /// (the packet is scheduled as new); otherwise the packet is to be dropped and the timer
    /// is left alone.
    #[inline]
    pub fn lookup_inbound(
        &mut self,
        key: &FlowKey,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Inbound {
        let bucket = self.inbound_bucket(key);
        self.lookup_inbound_at(bucket, key, status, counters)
    }

    #[inline]
    fn lookup_inbound_at(
        &mut self,
        bucket: usize,
        key: &FlowKey,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Inbound {
        let Some(index) = self.find_inbound_at(bucket, key) else {
            return Inbound::Miss;
        };
        let shared = self.shared();
        let slot = &shared.slots[index as usize];
        let conn = snapshot(self.id, index, slot, slot.word(), slot.meta());
        if status.is_available(conn.dest) {
            return Inbound::Hit(conn);
        }
        if self.table.inner.expire_nodest_conn.load(Ordering::Relaxed) {
            if self.kill(index, counters) {
                bump(&self.shared().stats.nodest_expired);
            }
            Inbound::Miss
        } else {
            Inbound::Drop
        }
    }

    /// Batch form of [`lookup_inbound`](Self::lookup_inbound): `out[i]` answers `keys[i]`.
    ///
    /// It overlaps the memory accesses of the batch, as DPDK's bulk lookups do: first the
    /// bucket heads of a group of keys are prefetched, then the first slot of each chain,
    /// then the keys are matched against warm cache lines. At millions of entries, where
    /// every lookup misses the caches, this is several times faster than one at a time.
    pub fn lookup_inbound_batch(
        &mut self,
        keys: &[FlowKey],
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
        out: &mut [Inbound],
    ) {
        let mut buckets = [0usize; BATCH_GROUP];
        for (keys, out) in keys.chunks(BATCH_GROUP).zip(out.chunks_mut(BATCH_GROUP)) {
            let shared = self.shared();
            for (key, bucket) in keys.iter().zip(buckets.iter_mut()) {
                *bucket = shared.inbound.bucket(self.table.inbound_hash(key));
                shared.inbound.prefetch_bucket(*bucket);
            }
            for &bucket in &buckets[..keys.len()] {
                if let Some(first) = shared.inbound.head(bucket) {
                    prefetch_slot(&shared.slots[first as usize]);
                }
            }
            for ((key, res), &bucket) in keys.iter().zip(out.iter_mut()).zip(&buckets) {
                *res = self.lookup_inbound_at(bucket, key, status, counters);
            }
        }
    }

    fn alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        if self.next_unused < self.capacity {
            self.next_unused += 1;
            return Some(self.next_unused - 1);
        }
        None
    }

    /// Creates a connection (IPVS `ip_vs_conn_new`): bound to its real server in the
    /// inactive state (InActConn += 1), state NONE with a 3 s timer until the caller feeds the
    /// first packet to [`on_packet`](Self::on_packet).
    pub fn insert(
        &mut self,
        new: NewConn,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Conn, InsertError> {
        if self.find_inbound(&new.key).is_some() {
            return Err(InsertError::Exists);
        }
        let Some(index) = self.alloc() else {
            bump(&self.shared().stats.refused);
            return Err(InsertError::Full);
        };
        let control = match &new.template {
            Some(t) => match self.table.attach_template(t, now) {
                Ok(r) => r,
                Err(e) => {
                    self.free.push(index);
                    return Err(e);
                }
            },
            None => 0,
        };
        let family = new.key.family();
        let via_director = new.return_path == ReturnPath::ViaDirector;
        let shared = self.table.shard(self.id);
        let slot = &shared.slots[index as usize];
        // The kill that freed this slot is ordered before its new contents (readers of a
        // stale handle re-check the word after reading fields).
        fence(Ordering::Release);
        slot.caddr.store(new.key.src.addr.bits());
        slot.vaddr.store(new.key.dst.addr.bits());
        slot.daddr.store(new.dest_addr.addr.bits());
        let k = kind_of(family) | if via_director { kind::VIA_DIRECTOR } else { 0 };
        let meta = Meta::new(
            new.key.src.port,
            new.key.dst.port,
            new.dest_addr.port,
            new.key.proto as u8,
            k,
        );
        slot.meta.store(meta.0, Ordering::Relaxed);
        slot.dest.store(new.dest.0, Ordering::Relaxed);
        slot.aux.store(0, Ordering::Relaxed);
        slot.control.store(control, Ordering::Relaxed);
        // Every dest's conn_flags carry INACTIVE, and NOOUTPUT unless it is NAT.
        let mut flags = flag::INACTIVE;
        if !via_director {
            flags |= flag::NO_OUTPUT;
        }
        let deadline = now.saturating_add(NEW_CONN_TIMEOUT);
        let generation = slot.word().generation();
        let word = StateWord::new(deadline, TcpState::None, flags, generation);
        slot.word.store(word.0, Ordering::Release);

        let table = &self.table;
        shared.inbound.link(
            shared.inbound.bucket(table.inbound_hash(&new.key)),
            index,
            &slot.next_primary,
        );
        if via_director {
            let reply = FlowKey::new(new.key.proto, new.dest_addr, new.key.src);
            shared.outbound.link(
                shared.outbound.bucket(table.outbound_hash(&reply)),
                index,
                &slot.next_outbound,
            );
        }
        self.wheel.schedule(index, deadline);
        bump(&shared.stats.conns);
        counters.conn_bound(new.dest);
        Ok(snapshot(self.id, index, slot, word, meta))
    }

    /// Creates a persistence template for `key` pointing at `dest` (PersistConn += 1), with
    /// the service's persistence timeout.
    pub fn insert_template(
        &mut self,
        key: &TemplateKey,
        dest: DestId,
        dest_addr: Endpoint,
        timeout: Secs,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<TemplateRef, InsertError> {
        let Some(index) = self.alloc() else {
            bump(&self.shared().stats.refused);
            return Err(InsertError::Full);
        };
        let shared = self.table.shard(self.id);
        let slot = &shared.slots[index as usize];
        let family = key.client_net.family();
        fence(Ordering::Release);
        slot.caddr.store(key.client_net.bits());
        slot.vaddr.store(key.service_addr.bits());
        slot.daddr.store(dest_addr.addr.bits());
        let mut k = kind::TEMPLATE | kind_of(family);
        if key.proto.is_none() {
            k |= kind::FWMARK;
        }
        let meta = Meta::new(0, key.vport, dest_addr.port, template_proto_byte(key), k);
        slot.meta.store(meta.0, Ordering::Relaxed);
        slot.dest.store(dest.0, Ordering::Relaxed);
        slot.aux.store(timeout, Ordering::Relaxed);
        let generation = slot.word().generation();
        slot.control
            .store(control::make(generation, 0), Ordering::Relaxed);
        let deadline = now.saturating_add(timeout);
        let word = StateWord::new(deadline, TcpState::None, 0, generation);
        slot.word.store(word.0, Ordering::Release);
        shared.templates.link(
            shared.templates.bucket(self.table.template_hash(key)),
            index,
            &slot.next_primary,
        );
        self.wheel.schedule(index, deadline);
        bump(&shared.stats.templates);
        counters.template_bound(dest);
        Ok(TemplateRef {
            flow: FlowRef {
                shard: self.id,
                slot: index,
                generation,
            },
            dest,
            dest_addr,
            expires: deadline,
        })
    }

    /// Feeds one packet to the state machine (see [`ConnTable::on_packet`]); on the owner a
    /// shortened timer is re-filed at once.
    #[inline]
    pub fn on_packet(
        &mut self,
        flow: FlowRef,
        direction: Direction,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<TcpState, Gone> {
        if flow.shard != self.id {
            return self.table.on_packet(flow, direction, flags, now, counters);
        }
        let applied = self
            .table
            .apply_packet(flow, direction, flags, now, counters)?;
        if applied.shortened {
            self.refile(flow.slot);
        }
        Ok(applied.state)
    }

    /// Moves a slot's timer earlier if its deadline now falls before the tick it is filed at.
    fn refile(&mut self, index: u32) {
        let deadline = self.shared().slots[index as usize].word().deadline();
        if let Some(at) = self.wheel.filed_at(index)
            && deadline < at
        {
            self.wheel.schedule(index, deadline);
        }
    }

    /// Removes a connection now (e.g. on an RST the caller wants gone at once, or an admin
    /// flush). Templates that still control connections stay.
    pub fn remove(&mut self, flow: FlowRef, counters: &mut impl DestCounters) -> bool {
        if flow.shard != self.id {
            return false;
        }
        let Some(slot) = self.shared().slots.get(flow.slot as usize) else {
            return false;
        };
        let word = slot.word();
        if word.generation() != flow.generation || word.has(flag::DEAD) {
            return false;
        }
        if slot.meta().is(kind::TEMPLATE) && !self.retire_template(flow.slot) {
            return false;
        }
        self.kill(flow.slot, counters)
    }

    /// Template teardown gate: `(gen, 0) -> (gen + 1, 0)` on the control word. Fails while
    /// connections are attached (IPVS: "do I control anybody?").
    fn retire_template(&self, index: u32) -> bool {
        let slot = &self.shared().slots[index as usize];
        let ctl = slot.control.load(Ordering::Acquire);
        let Some(generation) = control::generation(ctl) else {
            return false;
        };
        control::count(ctl) == 0
            && slot
                .control
                .compare_exchange(
                    ctl,
                    control::make(generation.wrapping_add(1), 0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Marks the slot dead (racing CASes from other workers decide the last state once) and
    /// releases it. Returns false if it was already dead.
    fn kill(&mut self, index: u32, counters: &mut impl DestCounters) -> bool {
        let slot = &self.table.shard(self.id).slots[index as usize];
        let mut word = slot.word();
        loop {
            if word.has(flag::DEAD) {
                return false;
            }
            match slot.cas_word(word, word.killed()) {
                Ok(()) => break,
                Err(w) => word = w,
            }
        }
        self.release(index, word, counters);
        true
    }

    /// Unlinks a dead slot from its indexes and the wheel, reports the counter changes
    /// (IPVS `ip_vs_unbind_dest`, `ip_vs_control_del`) and frees it. `last` is the word just
    /// before death.
    fn release(&mut self, index: u32, last: StateWord, counters: &mut impl DestCounters) {
        let table = self.table.clone();
        let shared = table.shard(self.id);
        let slots = &shared.slots;
        let slot = &slots[index as usize];
        let meta = slot.meta();
        let family = meta.family();
        let caddr = Addr::from_parts(slot.caddr.load(), family);
        let vaddr = Addr::from_parts(slot.vaddr.load(), family);
        let dest = DestId(slot.dest.load(Ordering::Relaxed));
        if meta.is(kind::TEMPLATE) {
            let key = TemplateKey {
                proto: (!meta.is(kind::FWMARK)).then(|| meta.protocol()),
                client_net: caddr,
                service_addr: vaddr,
                vport: meta.vport(),
            };
            let bucket = shared.templates.bucket(table.template_hash(&key));
            shared
                .templates
                .unlink(bucket, index, |s| &slots[s as usize].next_primary);
            drop_one(&shared.stats.templates);
            counters.template_released(dest);
        } else {
            let proto = meta.protocol();
            let key = FlowKey::new(
                proto,
                Endpoint {
                    addr: caddr,
                    port: meta.cport(),
                },
                Endpoint {
                    addr: vaddr,
                    port: meta.vport(),
                },
            );
            let bucket = shared.inbound.bucket(table.inbound_hash(&key));
            shared
                .inbound
                .unlink(bucket, index, |s| &slots[s as usize].next_primary);
            if meta.is(kind::VIA_DIRECTOR) {
                let daddr = Addr::from_parts(slot.daddr.load(), family);
                let reply = FlowKey::new(
                    proto,
                    Endpoint {
                        addr: daddr,
                        port: meta.dport(),
                    },
                    key.src,
                );
                let bucket = shared.outbound.bucket(table.outbound_hash(&reply));
                shared
                    .outbound
                    .unlink(bucket, index, |s| &slots[s as usize].next_outbound);
            }
            drop_one(&shared.stats.conns);
            counters.conn_released(dest, !last.has(flag::INACTIVE));
            // IPVS ip_vs_control_del: the template may now expire.
            let ctl = slot.control.swap(0, Ordering::AcqRel);
            if let Some((t_shard, t_slot)) = control::parse_template_ref(ctl)
                && let Some(t) = table.inner.shards.get(t_shard as usize)
            {
                t.slots[t_slot as usize]
                    .control
                    .fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.wheel.cancel(index);
        self.free.push(index);
    }

    /// Expires at once every connection of a removed real server in this shard, and its
    /// templates that control nothing any more: IPVS `ip_vs_expire_nodest_conn_flush`, which
    /// runs when a server is removed with `expire_nodest_conn` on. It walks the shard's used
    /// slots, so it belongs to the control path (the owner or its side thread, once per
    /// removal), never to the packet path. Returns how many entries were removed.
    pub fn expire_dest(&mut self, dest: DestId, counters: &mut impl DestCounters) -> usize {
        let mut removed = 0;
        // Connections first, so that templates they kept alive can go in the second pass.
        for templates in [false, true] {
            for index in 0..self.next_unused {
                let slot = &self.shared().slots[index as usize];
                if slot.word().has(flag::DEAD)
                    || slot.dest.load(Ordering::Relaxed) != dest.0
                    || slot.meta().is(kind::TEMPLATE) != templates
                {
                    continue;
                }
                if templates && !self.retire_template(index) {
                    continue;
                }
                if self.kill(index, counters) {
                    removed += 1;
                }
            }
        }
        self.shared()
            .stats
            .nodest_expired
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Runs expiry up to `now`: every entry whose deadline has passed is removed and its
    /// counters released. Work is proportional to the entries whose timers are due, never to
    /// the table size. Returns how many entries were removed.
    pub fn expire(&mut self, now: Secs, counters: &mut impl DestCounters) -> usize {
        self.drain_retime();
        let mut removed = 0;
        while let Some(index) = self.wheel.pop_due(now) {
            if self.expire_one(index, now, counters) {
                removed += 1;
            }
        }
        if removed > 0 {
            self.shared()
                .stats
                .expired
                .fetch_add(removed as u64, Ordering::Relaxed);
        }
        removed
    }

    fn drain_retime(&mut self) {
        while let Some(msg) = self.shared().retime.pop() {
            let index = (msg >> 32) as u32;
            let generation = msg as u32;
            let word = self.shared().slots[index as usize].word();
            if word.generation() == generation && !word.has(flag::DEAD) {
                self.refile(index);
            }
        }
    }

    /// A due timer: the entry goes if its deadline really passed, else it is re-filed.
    fn expire_one(&mut self, index: u32, now: Secs, counters: &mut impl DestCounters) -> bool {
        let table = self.table.clone();
        let slot = &table.shard(self.id).slots[index as usize];
        let is_template = slot.meta().is(kind::TEMPLATE);
        loop {
            let word = slot.word();
            if word.has(flag::DEAD) {
                return false;
            }
            if word.deadline() > now {
                self.wheel.schedule(index, word.deadline());
                return false;
            }
            if is_template && !self.retire_template(index) {
                // IPVS ip_vs_conn_expire: a template controlling connections expires later.
                let later = word.with(
                    now.saturating_add(TEMPLATE_BUSY_RETRY),
                    word.state(),
                    word.flags(),
                );
                if slot.cas_word(word, later).is_ok() {
                    self.wheel.schedule(index, later.deadline());
                    return false;
                }
                continue;
            }
            if slot.cas_word(word, word.killed()).is_ok() {
                self.release(index, word, counters);
                return true;
            }
        }
    }
}
