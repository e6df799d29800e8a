//! The owner's half of a shard: everything that creates, removes or expires entries.
//!
//! Only the worker holding a [`Shard`] writes its indexes, its free list and its expiry
//! wheel; that single-writer rule is what lets every other worker read the shard without a
//! lock (see [`crate::table`]). Packets of a connection may be fed to the state machine from
//! any worker, but only the owner re-files timers directly; others hand shortened deadlines
//! over through the shard's retime queue.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::conn::{
    Conn, FlowRef, Gone, Hit, Inbound, InsertError, NewConn, Peeked, TemplateRef, Tracked,
};
use crate::defense::{DefenseMode, HalfOpen, is_half_open};
use crate::dest::{DestCounters, DestId, DestStatus};
use crate::entry::{Meta, StateWord, control, dest_kind, flag, kind};
use crate::key::{Addr, Endpoint, FlowKey, Protocol};
use crate::state::{Direction, ReturnPath, TcpFlags, TcpState, select_table, transition};
use crate::table::{
    BATCH_GROUP, ConnTable, ShardShared, ShardStats, bump, drop_one, kind_of, matches_inbound,
    prefetch_slot, snapshot, snapshot_inbound, template_proto_byte,
};
use crate::template::TemplateKey;
use crate::timeouts::{NEW_CONN_TIMEOUT, Secs, TEMPLATE_BUSY_RETRY};
use crate::wheel::Wheel;

/// Entries [`Shard::evict_half_open`] looks at in one call at most.
const EVICTION_SCAN: usize = 64;

/// The slot of the connection `key` names in `shared`'s inbound chain at `bucket`.
#[inline]
fn find_inbound_in(shared: &ShardShared, bucket: usize, key: &FlowKey) -> Option<u32> {
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

/// One worker's shard: the only place connections are created, removed and expired.
#[derive(Debug)]
pub struct Shard {
    /// The table this shard belongs to (its shared half lives there).
    table: ConnTable,
    /// This shard's half in `table` (the same `Arc`), one load away on the per-packet path.
    own: Arc<ShardShared>,
    id: u16,
    wheel: Wheel,
    /// TCP connections that may still be half-open, oldest first (`drop_entry`).
    half_open: HalfOpen,
    free: Vec<u32>,
    next_unused: u32,
    capacity: u32,
}

impl Shard {
    pub(crate) fn new(
        table: ConnTable,
        own: Arc<ShardShared>,
        id: u16,
        capacity: u32,
        now: Secs,
    ) -> Self {
        Shard {
            table,
            own,
            id,
            wheel: Wheel::new(capacity as usize, now),
            half_open: HalfOpen::new(capacity as usize),
            // Reserved up front (untouched until used) so expiry never reallocates.
            free: Vec::with_capacity(capacity as usize),
            next_unused: 0,
            capacity,
        }
    }

    #[inline]
    pub fn id(&self) -> u16 {
        self.id
    }

    #[inline]
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

    #[inline]
    pub(crate) fn shared(&self) -> &ShardShared {
        &self.own
    }

    #[inline]
    fn inbound_bucket(&self, key: &FlowKey) -> usize {
        self.shared().inbound.bucket(self.table.inbound_hash(key))
    }

    pub(crate) fn find_inbound(&self, key: &FlowKey) -> Option<u32> {
        self.find_inbound_at(self.inbound_bucket(key), key)
    }

    #[inline]
    fn find_inbound_at(&self, bucket: usize, key: &FlowKey) -> Option<u32> {
        find_inbound_in(self.shared(), bucket, key)
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
        let conn = snapshot_inbound(self.id, index, slot, slot.word(), slot.meta(), key);
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

    /// Starts loading the memory an inbound lookup of `key` will touch (its bucket head);
    /// returns the bucket for [`prefetch_inbound_chain`](Self::prefetch_inbound_chain). A
    /// batch calls this for all its packets, then that, then does the lookups, so the cache
    /// misses of the whole batch overlap (at millions of flows, each lookup is two misses).
    #[inline]
    pub fn prefetch_inbound(&self, key: &FlowKey) -> usize {
        let shared = self.shared();
        let bucket = shared.inbound.bucket(self.table.inbound_hash(key));
        shared.inbound.prefetch_bucket(bucket);
        bucket
    }

    /// [`prefetch_inbound`](Self::prefetch_inbound) for an IPv4 TCP or UDP packet, from its
    /// bytes: `addresses` is the IPv4 header's bytes 12..20 (source, destination) and `ports`
    /// the transport header's first four (source, destination port), each read as one
    /// big-endian word. The same bucket as for the packet's [`FlowKey`], without building it.
    #[inline]
    pub fn prefetch_inbound_v4(&self, proto: Protocol, addresses: u64, ports: u32) -> usize {
        let shared = self.shared();
        let bucket = shared
            .inbound
            .bucket(self.table.inbound_hash_v4(proto, addresses, ports));
        shared.inbound.prefetch_bucket(bucket);
        bucket
    }

    /// Second step of [`prefetch_inbound`](Self::prefetch_inbound): starts loading the first
    /// slot of the bucket's chain (its head is in cache by now).
    #[inline]
    pub fn prefetch_inbound_chain(&self, bucket: usize) {
        let shared = self.shared();
        if let Some(first) = shared.inbound.head(bucket) {
            prefetch_slot(&shared.slots[first as usize]);
        }
    }

    /// The per-packet step for a client packet of a flow this shard may know (anything but a
    /// SYN that opens a connection): the lookup and the state update of
    /// [`lookup_inbound`](Self::lookup_inbound) + [`on_packet`](Self::on_packet) in one, the
    /// slot found once and updated in place, returning only what forwarding needs.
    #[inline]
    pub fn track_inbound(
        &mut self,
        key: &FlowKey,
        flags: TcpFlags,
        now: Secs,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Tracked {
        let bucket = self.inbound_bucket(key);
        self.track_inbound_at(bucket, key, flags, now, status, counters)
    }

    /// [`track_inbound`](Self::track_inbound) in the bucket that
    /// [`prefetch_inbound`](Self::prefetch_inbound) returned for `key` (the tuple is hashed
    /// once per packet).
    #[inline]
    pub fn track_inbound_at(
        &mut self,
        bucket: usize,
        key: &FlowKey,
        flags: TcpFlags,
        now: Secs,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Tracked {
        let table = &self.table;
        let shared = &*self.own;
        let Some(index) = find_inbound_in(shared, bucket, key) else {
            return Tracked::Miss;
        };
        let slot = &shared.slots[index as usize];
        let dest = DestId(slot.dest.load(Ordering::Relaxed));
        if !status.is_available(dest) {
            return match self.lookup_inbound_at(bucket, key, status, counters) {
                Inbound::Drop => Tracked::Drop,
                _ => Tracked::Miss,
            };
        }
        let flow = FlowRef {
            shard: self.id,
            slot: index,
            generation: slot.word().generation(),
        };
        let Ok(applied) = table.apply_to_slot(slot, flow, Direction::Input, flags, now, counters)
        else {
            return Tracked::Miss;
        };
        let meta = slot.meta();
        let hit = Hit {
            flow,
            dest,
            dest_addr: slot.endpoint(&slot.daddr, meta.dport(), meta.dest_family()),
            state: applied.state,
        };
        if applied.shortened {
            self.refile(index);
        }
        Tracked::Hit(hit)
    }

    /// The fast path's read-only lookup: the live connection (not a template) `key` names in
    /// `bucket` (from [`prefetch_inbound`](Self::prefetch_inbound)), with its state word as
    /// read. Changes nothing, so a caller that finds a reason to take the full path instead
    /// (an unavailable real server, an uncached egress) leaves no trace.
    #[inline(always)]
    pub fn peek_inbound(&self, bucket: usize, key: &FlowKey) -> Option<Peeked> {
        let shared = self.shared();
        let index = find_inbound_in(shared, bucket, key)?;
        let slot = &shared.slots[index as usize];
        let word = slot.word();
        if word.has(flag::DEAD) {
            return None;
        }
        Some(Peeked {
            slot: index,
            word: word.0,
            proto: key.proto,
            dest: DestId(slot.dest.load(Ordering::Relaxed)),
        })
    }

    /// Where a [`peek`](Self::peek_inbound)ed connection's packets go (read only by the
    /// methods that rewrite the destination: DR needs no address).
    #[inline]
    pub fn peeked_dest_addr(&self, peeked: &Peeked) -> Endpoint {
        let slot = &self.own.slots[peeked.slot as usize];
        let meta = slot.meta();
        slot.endpoint(&slot.daddr, meta.dport(), meta.dest_family())
    }

    /// Applies an input packet to a [`peek`](Self::peek_inbound)ed connection if it changes
    /// nothing but the timer (IPVS's state tables keep the state and no flag changes), the
    /// common case of an established flow. Returns `None`, having changed nothing, when the
    /// packet would change the state or a flag, or the entry changed since it was peeked:
    /// the full path ([`track_inbound`](Self::track_inbound)) then handles the packet.
    #[inline(always)]
    pub fn touch(&mut self, peeked: &Peeked, flags: TcpFlags, now: Secs) -> Option<FlowRef> {
        let table = &self.table;
        let word = StateWord(peeked.word);
        // A plain ACK keeps ESTABLISHED in every table (`state::tests` holds them to it), so
        // the commonest packet of all is checked on the raw word, without the table walk.
        let next = if peeked.proto == Protocol::Tcp
            && flags == TcpFlags::ACK
            && word.is_in(TcpState::Established)
        {
            TcpState::Established
        } else {
            let current = word.state();
            let next = match peeked.proto {
                Protocol::Tcp => {
                    let (direction, _) = select_table(Direction::Input, word.has(flag::NO_OUTPUT));
                    transition(table.table_set(), direction, flags, current)
                }
                Protocol::Udp | Protocol::Icmp => current,
            };
            if next != current {
                return None;
            }
            next
        };
        if word.has(flag::SYNCED) {
            return None;
        }
        let deadline = now.saturating_add(table.timeouts().for_state(peeked.proto, next));
        let new = word.with(deadline, next, word.flags());
        if new != word {
            // Only now is the slot itself needed (the deadline moves once a second at most).
            let slot = &self.own.slots[peeked.slot as usize];
            slot.cas_word(word, new).ok()?;
            if deadline < word.deadline() {
                self.refile(peeked.slot);
            }
        }
        Some(FlowRef {
            shard: self.id,
            slot: peeked.slot,
            generation: word.generation(),
        })
    }

    /// [`lookup_inbound`](Self::lookup_inbound) for a packet that opens a connection (a SYN
    /// without ACK), with IPVS's rules for a new connection meeting an old entry of the same
    /// tuple (`ip_vs_in`): the old entry is expired at once and [`Inbound::Miss`] returned, so
    /// the SYN is scheduled afresh, when
    /// - `expire_nodest_conn` is on and the old entry's real server is quiesced (weight 0)
    ///   and no template controls the entry; or
    /// - `conn_reuse_mode` is on and the old entry is a TCP connection no template controls,
    ///   in TIME_WAIT or CLOSE, or (mode bit 2) in FIN_WAIT with no output seen.
    ///
    /// xvs keeps no kernel conntrack, so IPVS's "drop the SYN while the old conntrack entry
    /// lives" case does not arise: the SYN is always rescheduled.
    pub fn lookup_inbound_new(
        &mut self,
        key: &FlowKey,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Inbound {
        let bucket = self.inbound_bucket(key);
        self.lookup_inbound_new_at(bucket, key, status, counters)
    }

    /// [`lookup_inbound_new`](Self::lookup_inbound_new) in the bucket that
    /// [`prefetch_inbound`](Self::prefetch_inbound) returned for `key`.
    pub fn lookup_inbound_new_at(
        &mut self,
        bucket: usize,
        key: &FlowKey,
        status: &impl DestStatus,
        counters: &mut impl DestCounters,
    ) -> Inbound {
        let found = self.lookup_inbound_at(bucket, key, status, counters);
        let Inbound::Hit(old) = found else {
            return found;
        };
        let options = self.table.options();
        let nodest = options.expire_nodest_conn && !old.persistent && status.is_quiescent(old.dest);
        let no_output = self.shared().slots[old.flow.slot as usize]
            .word()
            .has(flag::NO_OUTPUT);
        let reuse = options.conn_reuse_mode != 0
            && !old.persistent
            && old.proto == Protocol::Tcp
            && match old.state {
                TcpState::TimeWait | TcpState::Close => true,
                TcpState::FinWait => options.conn_reuse_mode & 2 != 0 && no_output,
                _ => false,
            };
        if !(nodest || reuse) {
            return found;
        }
        if self.kill(old.flow.slot, counters) && nodest {
            bump(&self.shared().stats.nodest_expired);
        }
        Inbound::Miss
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
            self.shared()
                .high_water
                .store(self.next_unused, Ordering::Release);
            return Some(self.next_unused - 1);
        }
        None
    }

    /// A free slot for a new entry, evicting the oldest half-open connection when the
    /// shard is full and `drop_entry` is on (or, in mode 3, above the pressure line).
    #[inline]
    fn alloc_defended(&mut self, counters: &mut impl DestCounters) -> Option<u32> {
        let mode = self.table.inner.defense.drop_entry();
        if mode == DefenseMode::Always
            && self
                .table
                .inner
                .defense
                .above_line(self.len() + 1, self.capacity as usize)
        {
            self.evict_half_open(counters);
        }
        if let Some(index) = self.alloc() {
            return Some(index);
        }
        if mode != DefenseMode::Off && self.evict_half_open(counters) {
            return self.alloc();
        }
        None
    }

    /// Evicts the shard's oldest half-open connection (never an established one, never a
    /// template). Entries past their handshake are taken off the list on the way; at most
    /// [`EVICTION_SCAN`] are looked at, so one call stays short. Returns whether one went.
    #[cold]
    pub(crate) fn evict_half_open(&mut self, counters: &mut impl DestCounters) -> bool {
        for _ in 0..EVICTION_SCAN {
            let Some(index) = self.half_open.oldest() else {
                return false;
            };
            let word = self.shared().slots[index as usize].word();
            if !word.has(flag::DEAD) && is_half_open(word.state()) && self.kill(index, counters) {
                bump(&self.shared().stats.evicted);
                return true;
            }
            self.half_open.remove(index);
        }
        false
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
        self.insert_missing(new, now, counters)
    }

    /// [`insert`](Self::insert) for a key the caller just looked up in this shard and missed
    /// (the data path's case: only the shard's worker inserts, so nothing can have added it
    /// since), without looking it up a second time.
    pub fn insert_missing(
        &mut self,
        new: NewConn,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Conn, InsertError> {
        let bucket = self.inbound_bucket(&new.key);
        let (index, word, meta) = self.fill_missing(&new, bucket, None, now, counters)?;
        Ok(snapshot(
            self.id,
            index,
            &self.own.slots[index as usize],
            word,
            meta,
        ))
    }

    /// The data path's new connection: [`insert_missing`](Self::insert_missing) in the
    /// inbound `bucket` the caller hashed `new.key` to, with the input packet that opened it
    /// (`flags`) already applied, as [`on_packet`](Self::on_packet) would apply it: the
    /// entry is written once, in the state and with the deadline that packet gives, and
    /// filed on the timer wheel at that deadline. The handle of the connection, which goes
    /// to `new.dest` at `new.dest_addr`.
    #[inline]
    pub fn open_missing(
        &mut self,
        new: &NewConn,
        bucket: usize,
        flags: TcpFlags,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<FlowRef, InsertError> {
        let (index, word, _) = self.fill_missing(new, bucket, Some(flags), now, counters)?;
        Ok(FlowRef {
            shard: self.id,
            slot: index,
            generation: word.generation(),
        })
    }

    /// Fills a free slot with `new` and links it (`bucket`: its inbound bucket); the slot,
    /// its state word and its meta word. With `opening`, the flags of the input packet that
    /// opens it, the entry starts in the state that packet leads to from NONE (IPVS
    /// `ip_vs_conn_new` then `ip_vs_set_state`); without, in NONE for
    /// [`NEW_CONN_TIMEOUT`].
    #[inline(always)]
    fn fill_missing(
        &mut self,
        new: &NewConn,
        bucket: usize,
        opening: Option<TcpFlags>,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<(u32, StateWord, Meta), InsertError> {
        debug_assert!(
            self.find_inbound(&new.key).is_none(),
            "insert_missing of a key the shard holds"
        );
        debug_assert_eq!(bucket, self.inbound_bucket(&new.key));
        let Some(index) = self.alloc_defended(counters) else {
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
        let shared = &*self.own;
        let slot = &shared.slots[index as usize];
        // The kill that freed this slot is ordered before its new contents (readers of a
        // stale handle re-check the word after reading fields).
        fence(Ordering::Release);
        slot.caddr.store(new.key.src.addr.bits());
        slot.vaddr.store(new.key.dst.addr.bits());
        slot.daddr.store(new.dest_addr.addr.bits());
        let k = kind_of(family)
            | dest_kind(family, new.dest_addr.addr.family())
            | if via_director { kind::VIA_DIRECTOR } else { 0 };
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
        let (state, deadline) = match opening {
            None => (TcpState::None, now.saturating_add(NEW_CONN_TIMEOUT)),
            Some(packet) => {
                // What `apply_to_slot` does for the first input packet, on the fresh entry.
                let state = match new.key.proto {
                    Protocol::Tcp => {
                        let (table, _) = select_table(Direction::Input, !via_director);
                        transition(self.table.table_set(), table, packet, TcpState::None)
                    }
                    Protocol::Udp | Protocol::Icmp => TcpState::None,
                };
                if state.is_active() {
                    flags &= !flag::INACTIVE;
                }
                let timeout = self.table.inner.timeouts.for_state(new.key.proto, state);
                (state, now.saturating_add(timeout))
            }
        };
        let generation = slot.word().generation();
        let word = StateWord::new(deadline, state, flags, generation);
        slot.word.store(word.0, Ordering::Release);

        let table = &self.table;
        shared.inbound.link(bucket, index, &slot.next_primary);
        if via_director {
            let reply = FlowKey::new(new.key.proto, new.dest_addr, new.key.src);
            shared.outbound.link(
                shared.outbound.bucket(table.outbound_hash(&reply)),
                index,
                &slot.next_outbound,
            );
        }
        // A slot from the free list is off the wheel.
        self.wheel.file(index, deadline);
        if new.key.proto == Protocol::Tcp {
            self.half_open.push(index);
        }
        bump(&shared.stats.conns);
        counters.conn_bound(new.dest);
        if state.is_active() {
            counters.conn_activated(new.dest);
        }
        Ok((index, word, meta))
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
        let Some(index) = self.alloc_defended(counters) else {
            bump(&self.shared().stats.refused);
            return Err(InsertError::Full);
        };
        let shared = &*self.own;
        let slot = &shared.slots[index as usize];
        let family = key.client_net.family();
        fence(Ordering::Release);
        slot.caddr.store(key.client_net.bits());
        slot.vaddr.store(key.service_addr.bits());
        slot.daddr.store(dest_addr.addr.bits());
        let mut k = kind::TEMPLATE | kind_of(family) | dest_kind(family, dest_addr.addr.family());
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
        self.wheel.file(index, deadline);
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
    pub(crate) fn refile(&mut self, index: u32) {
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
    pub(crate) fn retire_template(&self, index: u32) -> bool {
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
    pub(crate) fn kill(&mut self, index: u32, counters: &mut impl DestCounters) -> bool {
        let slot = &self.own.slots[index as usize];
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
        let shared = &*self.own;
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
                let daddr = Addr::from_parts(slot.daddr.load(), meta.dest_family());
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
        self.half_open.remove(index);
        self.free.push(index);
    }

    /// Expires at once every connection of a removed real server in this shard, and its
    /// templates that control nothing any more: IPVS `ip_vs_expire_nodest_conn_flush`, which
    /// runs when a server is removed with `expire_nodest_conn` on. It walks the shard's used
    /// slots, so it belongs to the control path (the owner or its side thread, once per
    /// removal), never to the packet path. Returns how many entries were removed.
    pub fn expire_dest(&mut self, dest: DestId, counters: &mut impl DestCounters) -> usize {
        self.expire_dests(|d| d == dest, counters)
    }

    /// [`expire_dest`](Self::expire_dest) for every server `removed` names, in one walk of
    /// the shard (a reload that removes many servers costs one walk, not one per server).
    pub fn expire_dests(
        &mut self,
        removed: impl Fn(DestId) -> bool,
        counters: &mut impl DestCounters,
    ) -> usize {
        let mut count = 0;
        // Connections first, so that templates they kept alive can go in the second pass.
        for templates in [false, true] {
            for index in 0..self.next_unused {
                let slot = &self.shared().slots[index as usize];
                if slot.word().has(flag::DEAD)
                    || !removed(DestId(slot.dest.load(Ordering::Relaxed)))
                    || slot.meta().is(kind::TEMPLATE) != templates
                {
                    continue;
                }
                if templates && !self.retire_template(index) {
                    continue;
                }
                if self.kill(index, counters) {
                    count += 1;
                }
            }
        }
        self.shared()
            .stats
            .nodest_expired
            .fetch_add(count as u64, Ordering::Relaxed);
        count
    }

    /// Runs expiry up to `now`: every entry whose deadline has passed is removed and its
    /// counters released. Work is proportional to the entries whose timers are due, never to
    /// the table size. Returns how many entries were removed.
    ///
    /// Call it from the owning worker's loop whenever the clock has moved (the wheel has one
    /// second resolution, so once per second is enough), or move the shard to a side thread
    /// that owns it. Until it runs, an overdue entry can still be found by lookups.
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
        self.table.update_defense(now);
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
        let own = Arc::clone(&self.own);
        let slot = &own.slots[index as usize];
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
