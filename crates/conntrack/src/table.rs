//! The sharded connection table: [`ConnTable`] (shared by all workers) and [`Shard`] (owned by
//! one worker).
//!
//! ## Concurrency design
//! Each worker owns one shard and is its only writer: it creates the flows it schedules,
//! links and unlinks them, and runs their expiry. Other workers need two things from a shard
//! they do not own, and get both without a lock:
//! - **lookups** (NAT replies arriving on another queue, persistence templates): the shard's
//!   indexes are chained hash tables of atomics guarded by striped sequence counters (the
//!   private `index` module); readers retry if the owner changed the chain under them and
//!   never write, so N readers scale like one;
//! - **state updates** (a NAT reply's FIN, a timer refresh, a template's refresh and its
//!   `n_control`): the mutable part of an entry is one 64-bit word changed by CAS, so two
//!   workers updating the same flow agree on one sequence of states and the counter events of
//!   each crossing are reported once, by the thread whose CAS made it. A shortened deadline
//!   found by a non-owner is passed to the owner through a bounded lock-free queue.
//!
//! Consequences for the dataplane: a NAT reply needs no hand-off to the owning worker (the
//! worker that receives it resolves it and updates its state itself). The price is that an
//! outbound lookup probes every shard's index; the probes' memory loads are issued together,
//! so a miss costs about one memory latency, not one per shard. Persistence templates live in
//! the shard of the worker that created them and are found from any worker; as in IPVS (which
//! also creates templates without a lock), two workers scheduling the first connections of
//! one client at the same instant may each create one, and both are valid.
//!
//! ## A full table
//! Each shard has a fixed number of slots (`max_entries / shards`, reserved up front as
//! zeroed memory that becomes resident as it is used, so memory is bounded and the hot path
//! never allocates). When no slot is free a new flow is **refused and counted**
//! ([`ShardStats::refused`]), unless the SYN-flood defence's `drop_entry` is on
//! ([`crate::defense`]): then the shard's oldest *half-open* connection is evicted for it
//! ([`ShardStats::evicted`]). Evicting "the oldest idle" entry would throw out established
//! flows to make room for spoofed ones; evicting only connections that never completed a
//! handshake keeps every established flow working while real clients still get in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;

use crate::conn::{Conn, FlowRef, Gone, InsertError, Listed, TemplateRef};
use crate::defense::{Defense, DefenseState, DefenseStatus};
use crate::dest::{DestCounters, DestId, DestStatus};
use crate::entry::{Meta, Slot, StateWord, control, flag, kind};
use crate::hash::{hash_words, random_seed};
use crate::index::ChainIndex;
use crate::key::{Family, FlowKey, Protocol};
use crate::shard::Shard;
use crate::state::{Direction, ReturnPath, TableSet, TcpFlags, TcpState, select_table, transition};
use crate::template::TemplateKey;
use crate::timeouts::{Secs, Timeouts};

/// IPVS behaviour switches (sysctls), changeable at run time. The default is IPVS's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// `conn_reuse_mode` (IPVS default 1): a SYN that meets an old connection with the same
    /// tuple in TIME_WAIT or CLOSE expires it and is scheduled as a new connection; bit 2
    /// also does so for FIN_WAIT when no output was seen (DR/TUN). 0 keeps the old entry.
    /// See [`Shard::lookup_inbound_new`](crate::Shard::lookup_inbound_new).
    pub conn_reuse_mode: u8,
    /// `sloppy_tcp`: a TCP packet other than a SYN (an RST excepted) for an unknown flow is
    /// scheduled and opens an entry, as IPVS does under this sysctl. With `mh`, whose table
    /// is the same on every director, a flow that ECMP moves to another director keeps its
    /// real server. A service can also ask for it alone (its spec's `sloppy_tcp`).
    pub sloppy_tcp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            secure_tcp: false,
            conn_reuse_mode: 1,
            sloppy_tcp: false,
        }
    }
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
    /// SYN-flood defence ([`crate::defense`]); IPVS's default is off.
    pub defense: Defense,
}

impl Config {
    pub fn new(shards: usize, max_entries: usize) -> Self {
        Config {
            shards,
            max_entries,
            options: Options::default(),
            seed: None,
            now: 0,
            defense: Defense::default(),
        }
    }
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
    /// Half-open connections evicted to make room for new entries (`drop_entry`).
    pub evicted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicStats {
    pub(crate) conns: AtomicU64,
    pub(crate) templates: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) nodest_expired: AtomicU64,
    pub(crate) retime_dropped: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn drop_one(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

/// The part of a shard every worker may read.
#[derive(Debug)]
pub(crate) struct ShardShared {
    pub(crate) slots: Box<[Slot]>,
    pub(crate) inbound: ChainIndex,
    pub(crate) outbound: ChainIndex,
    pub(crate) templates: ChainIndex,
    /// `(slot, generation)` of entries whose deadline another worker shortened.
    pub(crate) retime: ArrayQueue<u64>,
    pub(crate) stats: CachePadded<AtomicStats>,
    /// Slots ever handed out (the owner's high-water mark), so listing skips the rest.
    pub(crate) high_water: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Each shard's shared half; its owner holds a second `Arc` to reach its own in one load.
    pub(crate) shards: Box<[Arc<ShardShared>]>,
    pub(crate) timeouts: Timeouts,
    pub(crate) seed: u64,
    pub(crate) expire_nodest_conn: AtomicBool,
    pub(crate) expire_quiescent_template: AtomicBool,
    /// The state tables in force: `secure_tcp` set by the operator or by the defence.
    pub(crate) secure_tcp: AtomicBool,
    /// [`Options::secure_tcp`] as the operator set it.
    pub(crate) secure_tcp_option: AtomicBool,
    pub(crate) sloppy_tcp: AtomicBool,
    pub(crate) conn_reuse_mode: AtomicU8,
    pub(crate) defense: DefenseState,
    /// Slots over all shards.
    pub(crate) capacity: usize,
}

/// The table as every worker sees it (cheap to clone).
#[derive(Clone, Debug)]
pub struct ConnTable {
    pub(crate) inner: Arc<Inner>,
}

// ---- hashing of the three keys ------------------------------------------------------------

#[inline]
pub(crate) fn family_bit(f: Family) -> u64 {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Hash of (proto, family, a, a_port, b, b_port). Inbound uses (client, vip), outbound
/// (real server, client), templates (client net, service).
#[inline]
pub(crate) fn tuple_hash(
    seed: u64,
    proto: u8,
    family: Family,
    a: u128,
    ap: u16,
    b: u128,
    bp: u16,
) -> u64 {
    match family {
        Family::V4 => tuple_hash_v4(
            seed,
            proto,
            (a as u64) << 32 | (b as u64 & 0xffff_ffff),
            u32::from(ap) << 16 | u32::from(bp),
        ),
        Family::V6 => hash_words(
            seed,
            &[
                a as u64,
                (a >> 64) as u64,
                b as u64,
                (b >> 64) as u64,
                (ap as u64) << 32 | (bp as u64) << 16 | (proto as u64) << 8 | family_bit(family),
            ],
        ),
    }
}

/// [`tuple_hash`] of an IPv4 tuple given as a packet holds it: the two addresses as one
/// big-endian word (`a` high, as an IPv4 header's bytes 12..20 read), the two ports as one
/// (a TCP/UDP header's first four bytes).
#[inline(always)]
pub(crate) fn tuple_hash_v4(seed: u64, proto: u8, addresses: u64, ports: u32) -> u64 {
    let tail = u64::from(ports) << 16 | (proto as u64) << 8 | family_bit(Family::V4);
    hash_words(seed, &[addresses, tail])
}

pub(crate) fn kind_of(family: Family) -> u8 {
    match family {
        Family::V4 => 0,
        Family::V6 => kind::V6,
    }
}

pub(crate) fn template_proto_byte(key: &TemplateKey) -> u8 {
    key.proto.map_or(0, |p| p as u8)
}

impl ShardShared {
    pub(crate) fn new(capacity: usize) -> Self {
        ShardShared {
            slots: crate::memory::zeroed_slice(capacity),
            inbound: ChainIndex::new(capacity),
            outbound: ChainIndex::new(capacity),
            templates: ChainIndex::new(capacity / 8),
            retime: ArrayQueue::new(capacity.clamp(64, 16 * 1024)),
            stats: CachePadded::new(AtomicStats::default()),
            high_water: AtomicU32::new(0),
        }
    }

    pub(crate) fn stats(&self) -> ShardStats {
        let s = &self.stats;
        ShardStats {
            conns: s.conns.load(Ordering::Relaxed),
            templates: s.templates.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            nodest_expired: s.nodest_expired.load(Ordering::Relaxed),
            retime_dropped: s.retime_dropped.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
        }
    }
}

/// Reads a connection slot into a [`Conn`] (the caller has matched its key).
pub(crate) fn snapshot(shard: u16, index: u32, slot: &Slot, word: StateWord, meta: Meta) -> Conn {
    let family = meta.family();
    let key = FlowKey::new(
        meta.protocol(),
        slot.endpoint(&slot.caddr, meta.cport(), family),
        slot.endpoint(&slot.vaddr, meta.vport(), family),
    );
    snapshot_inbound(shard, index, slot, word, meta, &key)
}

/// Reads any live slot (connection or template) into a [`Listed`]; the caller re-checks the
/// word afterwards.
pub(crate) fn listed(shard: u16, index: u32, slot: &Slot, word: StateWord, meta: Meta) -> Listed {
    let family = meta.family();
    let template = meta.is(kind::TEMPLATE);
    Listed {
        flow: FlowRef {
            shard,
            slot: index,
            generation: word.generation(),
        },
        template,
        proto: (!meta.is(kind::FWMARK)).then(|| meta.protocol()),
        client: slot.endpoint(&slot.caddr, meta.cport(), family),
        vip: slot.endpoint(&slot.vaddr, meta.vport(), family),
        dest_addr: slot.endpoint(&slot.daddr, meta.dport(), meta.dest_family()),
        dest: DestId(slot.dest.load(Ordering::Relaxed)),
        state: word.state(),
        expires: word.deadline(),
        active: !template && !word.has(flag::INACTIVE),
        no_output: word.has(flag::NO_OUTPUT),
        synced: word.has(flag::SYNCED),
    }
}

/// [`snapshot`] of a connection just matched by its inbound `key`: the client and virtual
/// addresses are the key's, so only the real server's address is read from the slot.
#[inline]
pub(crate) fn snapshot_inbound(
    shard: u16,
    index: u32,
    slot: &Slot,
    word: StateWord,
    meta: Meta,
    key: &FlowKey,
) -> Conn {
    Conn {
        flow: FlowRef {
            shard,
            slot: index,
            generation: word.generation(),
        },
        proto: key.proto,
        client: key.src,
        vip: key.dst,
        dest_addr: slot.endpoint(&slot.daddr, meta.dport(), meta.dest_family()),
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

/// Whether a slot holds the entry a key names (inbound or outbound form).
type KeyMatch = fn(&Slot, Meta, &FlowKey, u8) -> bool;

/// Which chain of a shard a lookup walks.
#[derive(Clone, Copy)]
enum Chain {
    /// Client -> service keys.
    Inbound,
    /// Real server -> client keys (NAT replies).
    Outbound,
}

/// Does `slot` hold the connection a packet `key` (client -> vip) belongs to?
#[inline]
pub(crate) fn matches_inbound(slot: &Slot, meta: Meta, key: &FlowKey, kind_v6: u8) -> bool {
    // The client port, virtual port, protocol and the kind bits that matter (a connection,
    // not a template, of the key's family) in one masked compare of the meta word.
    const COMPARED: Meta = Meta::new(0xffff, 0xffff, 0, 0xff, kind::TEMPLATE | kind::V6);
    let expected = Meta::new(key.src.port, key.dst.port, 0, key.proto as u8, kind_v6);
    (meta.0 ^ expected.0) & COMPARED.0 == 0
        && slot.caddr.equals(key.src.addr.bits())
        && slot.vaddr.equals(key.dst.addr.bits())
}

/// Does `slot` hold the NAT connection a reply `key` (real server -> client) belongs to?
#[inline]
pub(crate) fn matches_outbound(slot: &Slot, meta: Meta, key: &FlowKey, kind_v6: u8) -> bool {
    // As in `matches_inbound`: ports, protocol and kind (a NAT connection of the key's
    // family) in one masked compare.
    const COMPARED: Meta = Meta::new(
        0xffff,
        0,
        0xffff,
        0xff,
        kind::TEMPLATE | kind::V6 | kind::VIA_DIRECTOR,
    );
    let expected = Meta::new(
        key.dst.port,
        0,
        key.src.port,
        key.proto as u8,
        kind_v6 | kind::VIA_DIRECTOR,
    );
    (meta.0 ^ expected.0) & COMPARED.0 == 0
        && slot.daddr.equals(key.src.addr.bits())
        && slot.caddr.equals(key.dst.addr.bits())
}

pub(crate) fn matches_template(slot: &Slot, meta: Meta, key: &TemplateKey) -> bool {
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
pub(crate) const BATCH_GROUP: usize = 16;

/// Starts loading every cache line an 88-byte slot may span (it is not line-aligned).
#[inline]
pub(crate) fn prefetch_slot(slot: &Slot) {
    let base = slot as *const Slot as *const u8;
    crate::memory::prefetch(base);
    crate::memory::prefetch(base.wrapping_add(48));
    crate::memory::prefetch(base.wrapping_add(87));
}

/// What a packet did to a connection's state word.
pub(crate) struct Applied {
    pub(crate) state: TcpState,
    /// The deadline moved earlier than before (the owner's wheel may need to know).
    pub(crate) shortened: bool,
}

/// Bytes a table of `max_entries` over `shards` shards occupies when full: every array it
/// allocates (slots, indexes, timer and half-open links, free list, retime queue). An empty
/// table costs almost none of it: the arrays are zeroed allocations the kernel backs only as
/// they are written (the bucket heads as entries hash into them, the rest as slots are used).
pub fn memory_when_full(max_entries: usize, shards: usize) -> u64 {
    let shards = shards.clamp(1, u16::MAX as usize);
    let per_shard = max_entries.div_ceil(shards).clamp(1, u32::MAX as usize - 1) as u64;
    let heads = |n: u64| n.max(16).next_power_of_two() * 4;
    let per_entry = (std::mem::size_of::<Slot>() // the slot
        + 12 // its timer wheel link
        + 8 // its half-open list link
        + 4) as u64; // its place on the free list
    let retime = per_shard.clamp(64, 16 * 1024) * 16;
    let one = per_shard * per_entry
        + 2 * heads(per_shard) // inbound and outbound buckets
        + heads(per_shard / 8) // template buckets
        + retime
        + u64::from(crate::wheel::WHEEL_SLOTS) * 4;
    one * shards as u64
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
        let timeouts = Timeouts::default();
        let defense = DefenseState::new(config.defense);
        let secure_by_defense = defense.set(config.defense, &timeouts);
        let inner = Inner {
            shards: (0..shards)
                .map(|_| Arc::new(ShardShared::new(per_shard)))
                .collect(),
            timeouts,
            seed: config.seed.unwrap_or_else(random_seed),
            expire_nodest_conn: AtomicBool::new(config.options.expire_nodest_conn),
            expire_quiescent_template: AtomicBool::new(config.options.expire_quiescent_template),
            secure_tcp: AtomicBool::new(config.options.secure_tcp || secure_by_defense),
            secure_tcp_option: AtomicBool::new(config.options.secure_tcp),
            sloppy_tcp: AtomicBool::new(config.options.sloppy_tcp),
            conn_reuse_mode: AtomicU8::new(config.options.conn_reuse_mode),
            defense,
            capacity: per_shard * shards,
        };
        let table = ConnTable {
            inner: Arc::new(inner),
        };
        let owners = (0..shards)
            .map(|id| {
                let shared = Arc::clone(&table.inner.shards[id]);
                Shard::new(
                    table.clone(),
                    shared,
                    id as u16,
                    per_shard as u32,
                    config.now,
                )
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
            secure_tcp: self.inner.secure_tcp_option.load(Ordering::Relaxed),
            sloppy_tcp: self.inner.sloppy_tcp.load(Ordering::Relaxed),
            conn_reuse_mode: self.inner.conn_reuse_mode.load(Ordering::Relaxed),
        }
    }

    /// The `sloppy_tcp` switch alone (read on the data path's miss of a non-SYN segment).
    #[inline]
    pub fn sloppy_tcp(&self) -> bool {
        self.inner.sloppy_tcp.load(Ordering::Relaxed)
    }

    pub fn set_options(&self, o: Options) {
        let i = &self.inner;
        i.expire_nodest_conn
            .store(o.expire_nodest_conn, Ordering::Relaxed);
        i.expire_quiescent_template
            .store(o.expire_quiescent_template, Ordering::Relaxed);
        i.secure_tcp_option.store(o.secure_tcp, Ordering::Relaxed);
        let by_defense = i.defense.status().secure_tcp.in_force();
        i.secure_tcp
            .store(o.secure_tcp || by_defense, Ordering::Relaxed);
        i.sloppy_tcp.store(o.sloppy_tcp, Ordering::Relaxed);
        i.conn_reuse_mode
            .store(o.conn_reuse_mode, Ordering::Relaxed);
    }

    /// The SYN-flood defence's settings.
    pub fn defense(&self) -> Defense {
        self.inner.defense.get()
    }

    /// Replaces the defence's settings (a reload); takes effect at once.
    pub fn set_defense(&self, d: Defense) {
        let i = &self.inner;
        let by_defense = i.defense.set(d, &i.timeouts);
        let option = i.secure_tcp_option.load(Ordering::Relaxed);
        i.secure_tcp.store(option || by_defense, Ordering::Relaxed);
    }

    /// What the defence is doing now.
    pub fn defense_status(&self) -> DefenseStatus {
        self.inner.defense.status()
    }

    /// Entries over all shards at most.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Once per clock second (whichever shard's expiry comes first): measures the table's
    /// pressure and moves the automatic defence modes (IPVS `update_defense_level`).
    pub(crate) fn update_defense(&self, now: Secs) {
        let i = &self.inner;
        if !i.defense.claim(now) {
            return;
        }
        let used: u64 = i
            .shards
            .iter()
            .map(|s| {
                s.stats.conns.load(Ordering::Relaxed) + s.stats.templates.load(Ordering::Relaxed)
            })
            .sum();
        let pressure = i.defense.pressure(used as usize, i.capacity);
        let by_defense = i.defense.evaluate(pressure, &i.timeouts);
        let option = i.secure_tcp_option.load(Ordering::Relaxed);
        i.secure_tcp.store(option || by_defense, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn table_set(&self) -> TableSet {
        if self.inner.secure_tcp.load(Ordering::Relaxed) {
            TableSet::Secure
        } else {
            TableSet::Normal
        }
    }

    #[inline]
    pub(crate) fn shard(&self, id: u16) -> &ShardShared {
        &self.inner.shards[id as usize]
    }

    #[inline]
    pub(crate) fn slot(&self, flow: FlowRef) -> Option<&Slot> {
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
            .map(|shard| shard.stats())
            .fold(ShardStats::default(), |a, b| ShardStats {
                conns: a.conns + b.conns,
                templates: a.templates + b.templates,
                refused: a.refused + b.refused,
                expired: a.expired + b.expired,
                nodest_expired: a.nodest_expired + b.nodest_expired,
                retime_dropped: a.retime_dropped + b.retime_dropped,
                evicted: a.evicted + b.evicted,
            })
    }

    #[inline]
    pub(crate) fn outbound_hash(&self, key: &FlowKey) -> u64 {
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

    /// [`inbound_hash`](Self::inbound_hash) of an IPv4 tuple read straight from a packet
    /// (see [`tuple_hash_v4`]).
    #[inline]
    pub(crate) fn inbound_hash_v4(&self, proto: Protocol, addresses: u64, ports: u32) -> u64 {
        tuple_hash_v4(self.inner.seed, proto as u8, addresses, ports).rotate_left(17)
    }

    #[inline]
    pub(crate) fn inbound_hash(&self, key: &FlowKey) -> u64 {
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

    #[inline]
    pub(crate) fn template_hash(&self, key: &TemplateKey) -> u64 {
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

    /// A client -> service connection looked up from any worker, read-only: for the rare
    /// packets of a flow that arrive on another worker's queue (ICMP errors, whose RSS hash
    /// is not the flow's). Unlike [`Shard::lookup_inbound`] it applies no server-status rule;
    /// the caller checks the connection's server.
    pub fn lookup_inbound_any(&self, key: &FlowKey) -> Option<Conn> {
        self.find_in_every_shard(self.inbound_hash(key), key, Chain::Inbound)
    }

    #[inline]
    pub(crate) fn lookup_outbound_hashed(&self, key: &FlowKey, hash: u64) -> Option<Conn> {
        self.find_in_every_shard(hash, key, Chain::Outbound)
    }

    /// Walks `chain`'s bucket of `hash` in every shard, read-only, for the live entry `key`
    /// names.
    #[inline]
    fn find_in_every_shard(&self, hash: u64, key: &FlowKey, chain: Chain) -> Option<Conn> {
        let kind_v6 = kind_of(key.family());
        for (id, shard) in self.inner.shards.iter().enumerate() {
            let slots = &shard.slots;
            let (index, matches): (_, KeyMatch) = match chain {
                Chain::Inbound => (&shard.inbound, matches_inbound),
                Chain::Outbound => (&shard.outbound, matches_outbound),
            };
            let hit = index.find_shared(
                index.bucket(hash),
                |s| match chain {
                    Chain::Inbound => &slots[s as usize].next_primary,
                    Chain::Outbound => &slots[s as usize].next_outbound,
                },
                |s| {
                    let slot = &slots[s as usize];
                    let meta = slot.meta();
                    if !matches(slot, meta, key, kind_v6) {
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

    /// Calls `f` for every live entry of `shard` (connections and templates), for
    /// `ipvsadm -lc` and connection sync. This walks the shard's slots: a control-path
    /// operation, safe from any thread while the owner keeps working (each entry is read
    /// consistently, entries created or removed meanwhile may or may not be seen).
    pub fn for_each_entry(&self, shard: u16, mut f: impl FnMut(Listed)) {
        let Some(shared) = self.inner.shards.get(shard as usize) else {
            return;
        };
        let used = shared.high_water.load(Ordering::Acquire) as usize;
        for (index, slot) in shared.slots[..used].iter().enumerate() {
            // A busy entry's word moves (deadline refreshes); retry a few times, then skip it
            // rather than show a torn copy.
            for _ in 0..4 {
                let word = slot.word();
                let meta = slot.meta();
                // Never-used slots (and one being filled for the first time) have a zero
                // word; freed ones (and reused ones being refilled) are DEAD.
                if word.0 == 0 || word.has(flag::DEAD) || meta.0 == 0 {
                    break;
                }
                let listed = listed(shard, index as u32, slot, word, meta);
                // Accept the copy only if the word did not change while it was read (any
                // creation or removal changes it).
                fence(Ordering::Acquire);
                if slot.word.load(Ordering::Relaxed) == word.0 {
                    f(listed);
                    break;
                }
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
                    Some(TemplateRef {
                        flow: FlowRef {
                            shard: id as u16,
                            slot: s,
                            generation: word.generation(),
                        },
                        dest: DestId(slot.dest.load(Ordering::Relaxed)),
                        dest_addr: slot.endpoint(&slot.daddr, meta.dport(), meta.dest_family()),
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

    pub(crate) fn invalidate_template(&self, flow: FlowRef) {
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
    pub(crate) fn attach_template(&self, t: &TemplateRef, now: Secs) -> Result<u64, InsertError> {
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
    #[inline]
    pub(crate) fn apply_packet(
        &self,
        flow: FlowRef,
        direction: Direction,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Applied, Gone> {
        let slot = self.slot(flow).ok_or(Gone)?;
        self.apply_to_slot(slot, flow, direction, flags, now, counters)
    }

    /// [`apply_packet`](Self::apply_packet) on a slot the caller already holds.
    #[inline(always)]
    pub(crate) fn apply_to_slot(
        &self,
        slot: &Slot,
        flow: FlowRef,
        direction: Direction,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Applied, Gone> {
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
            // A packet seen here: the entry is no longer only what sync said.
            let mut flags_now = word.flags() & !flag::SYNCED;
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
