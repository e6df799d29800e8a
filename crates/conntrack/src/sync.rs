//! The entries connection sync exports and imports (IPVS `ip_vs_sync.c`'s view of a conn).
//!
//! - Export, on the master: [`ConnTable::sync_due`] counts an input packet and answers
//!   IPVS's `ip_vs_sync_conn_needed` (with `sync_refresh_period` 0, the kernel's default);
//!   [`ConnTable::export`] and [`ConnTable::template_of`] copy out what the message carries.
//! - Import, on the backup: [`Shard::install`] and [`Shard::install_template`] create or
//!   update an entry with the master's state and remaining time (IPVS `ip_vs_proc_conn`),
//!   marked *synced* until a packet of it is seen here.
//!
//! A connection's slot keeps the sync bookkeeping in its `aux` word (templates use `aux` for
//! their timeout): the input packets counted, shifted left by 4, and the state when it was
//! last synced (IPVS's `in_pkts` and `old_state`).

use std::sync::atomic::Ordering;

use crate::conn::{Conn, FlowRef, InsertError, Listed, NewConn, TemplateRef};
use crate::dest::{DestCounters, DestId};
use crate::entry::{StateWord, control, flag, kind};
use crate::key::{Endpoint, Protocol};
use crate::shard::Shard;
use crate::state::TcpState;
use crate::table::{ConnTable, matches_template};
use crate::template::TemplateKey;
use crate::timeouts::Secs;

/// When the master sends a connection (IPVS sysctl `sync_threshold`, default "3 50").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Sync at this many input packets...
    pub threshold: u32,
    /// ...and every `period` packets after (0: once, at `threshold`).
    pub period: u32,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            threshold: 3,
            period: 50,
        }
    }
}

const STATE_BITS: u32 = 4;
const STATE_MASK: u32 = (1 << STATE_BITS) - 1;

fn sync_word(pkts: u32, state: TcpState) -> u32 {
    pkts << STATE_BITS | state as u32
}

impl ConnTable {
    /// Counts one input packet of `flow` (after its state update) and says whether the
    /// master sends it now: IPVS `ip_vs_sync_conn_needed` without a refresh period. TCP
    /// syncs only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT; a change into any
    /// of those but ESTABLISHED syncs at once; otherwise a connection syncs when its packet
    /// count is `threshold` modulo `period`. UDP has one state and syncs by count alone.
    pub fn sync_due(&self, flow: FlowRef, policy: SyncPolicy) -> bool {
        let Some(slot) = self.slot(flow) else {
            return false;
        };
        let word = slot.word();
        let meta = slot.meta();
        if word.generation() != flow.generation || word.has(flag::DEAD) || meta.is(kind::TEMPLATE) {
            return false;
        }
        let previous = slot.aux.fetch_add(1 << STATE_BITS, Ordering::Relaxed);
        let pkts = (previous >> STATE_BITS).wrapping_add(1) & (u32::MAX >> STATE_BITS);
        let synced_state = TcpState::from_u8((previous & STATE_MASK) as u8);
        let state = word.state();
        let mark = |slot: &crate::entry::Slot| {
            let _ = slot
                .aux
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some(w & !STATE_MASK | state as u32)
                });
        };
        match meta.protocol() {
            Protocol::Tcp => {
                if !matches!(
                    state,
                    TcpState::Established
                        | TcpState::FinWait
                        | TcpState::Close
                        | TcpState::CloseWait
                        | TcpState::TimeWait
                ) {
                    return false;
                }
                if state != synced_state && state != TcpState::Established {
                    mark(slot);
                    return true;
                }
            }
            Protocol::Udp => {}
            // IPVS syncs TCP, UDP and SCTP connections only.
            Protocol::Icmp => return false,
        }
        let due = if policy.period > 0 {
            pkts % policy.period == policy.threshold
        } else {
            pkts == policy.threshold
        };
        if due {
            mark(slot);
        }
        due
    }

    /// A live connection or template as sync sends it.
    pub fn export(&self, flow: FlowRef) -> Option<Listed> {
        let slot = self.slot(flow)?;
        let word = slot.word();
        if word.generation() != flow.generation || word.has(flag::DEAD) {
            return None;
        }
        let listed = crate::table::listed(flow.shard, flow.slot, slot, word, slot.meta());
        // Seqlock-style re-check: not freed (and reused) while it was read.
        std::sync::atomic::fence(Ordering::Acquire);
        let after = StateWord(slot.word.load(Ordering::Relaxed));
        (after.generation() == flow.generation && !after.has(flag::DEAD)).then_some(listed)
    }

    /// The persistence template controlling connection `flow`, if any (IPVS `cp->control`).
    pub fn template_of(&self, flow: FlowRef) -> Option<FlowRef> {
        let slot = self.slot(flow)?;
        let word = slot.word();
        if word.generation() != flow.generation || slot.meta().is(kind::TEMPLATE) {
            return None;
        }
        let (shard, index) = control::parse_template_ref(slot.control.load(Ordering::Acquire))?;
        let t = self
            .inner
            .shards
            .get(shard as usize)?
            .slots
            .get(index as usize)?;
        let generation = control::generation(t.control.load(Ordering::Acquire))?;
        Some(FlowRef {
            shard,
            slot: index,
            generation,
        })
    }
}

impl Shard {
    /// A connection learned from the master (IPVS `ip_vs_proc_conn`): created if new, else
    /// updated, with the master's `state` and `timeout` seconds left, marked synced. The
    /// ActiveConn/InActConn counters follow the state as for any connection. `new.template`
    /// is ignored: as in IPVS, a backup's connections are not tied to templates.
    pub fn install(
        &mut self,
        new: NewConn,
        state: TcpState,
        timeout: Secs,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<Conn, InsertError> {
        let new = NewConn {
            template: None,
            ..new
        };
        let index = match self.find_inbound(&new.key) {
            Some(index) => index,
            None => self.insert(new, now, counters)?.flow.slot,
        };
        let shared = self.shared();
        let slot = &shared.slots[index as usize];
        let deadline = now.saturating_add(timeout);
        // UDP and ICMP entries stay in InActConn, as in IPVS.
        let active = new.key.proto == Protocol::Tcp && state.is_active();
        let mut word = slot.word();
        let dest = DestId(slot.dest.load(Ordering::Relaxed));
        loop {
            let mut flags = word.flags() | flag::SYNCED;
            if active {
                flags &= !flag::INACTIVE;
            } else {
                flags |= flag::INACTIVE;
            }
            let next = word.with(deadline, state, flags);
            match slot.cas_word(word, next) {
                Ok(()) => {
                    match (word.has(flag::INACTIVE), active) {
                        (true, true) => counters.conn_activated(dest),
                        (false, false) => counters.conn_deactivated(dest),
                        _ => {}
                    }
                    // IPVS: in_pkts = sync_threshold (the default's), old_state = state.
                    let threshold = SyncPolicy::default().threshold;
                    slot.aux
                        .store(sync_word(threshold, state), Ordering::Relaxed);
                    word = next;
                    break;
                }
                Err(actual) => word = actual,
            }
        }
        let meta = slot.meta();
        let conn = crate::table::snapshot(self.id(), index, slot, word, meta);
        self.refile(index);
        Ok(conn)
    }

    /// A persistence template learned from the master: its timer restarts with `timeout`
    /// seconds left if this shard has it for the same real server; otherwise it is created
    /// (one the master has moved to another real server is invalidated first).
    pub fn install_template(
        &mut self,
        key: &TemplateKey,
        dest: DestId,
        dest_addr: Endpoint,
        timeout: Secs,
        now: Secs,
        counters: &mut impl DestCounters,
    ) -> Result<TemplateRef, InsertError> {
        let shared = self.shared();
        let slots = &shared.slots;
        let bucket = shared.templates.bucket(self.table().template_hash(key));
        let found = shared.templates.find_owned(
            bucket,
            |s| &slots[s as usize].next_primary,
            |s| {
                let slot = &slots[s as usize];
                let word = slot.word();
                (matches_template(slot, slot.meta(), key) && !word.has(flag::DEAD | flag::INVALID))
                    .then_some(s)
            },
        );
        let deadline = now.saturating_add(timeout);
        if let Some(index) = found {
            let slot = &self.shared().slots[index as usize];
            if DestId(slot.dest.load(Ordering::Relaxed)) == dest {
                let mut word = slot.word();
                loop {
                    let next = word.with(deadline, word.state(), word.flags() | flag::SYNCED);
                    match slot.cas_word(word, next) {
                        Ok(()) => break,
                        Err(actual) => word = actual,
                    }
                }
                self.refile(index);
                return Ok(TemplateRef {
                    flow: FlowRef {
                        shard: self.id(),
                        slot: index,
                        generation: word.generation(),
                    },
                    dest,
                    dest_addr,
                    expires: deadline,
                });
            }
            let generation = slot.word().generation();
            self.table().invalidate_template(FlowRef {
                shard: self.id(),
                slot: index,
                generation,
            });
        }
        let t = self.insert_template(key, dest, dest_addr, timeout, now, counters)?;
        let slot = &self.shared().slots[t.flow.slot as usize];
        let mut word = slot.word();
        while let Err(actual) = slot.cas_word(
            word,
            word.with(word.deadline(), word.state(), word.flags() | flag::SYNCED),
        ) {
            word = actual;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{AllAvailable, NoCounters};
    use crate::key::FlowKey;
    use crate::state::{Direction, ReturnPath, TcpFlags};
    use crate::table::Config;
    use crate::template::PersistenceMask;
    use crate::{Inbound, ServiceKey};

    fn key(port: u16) -> FlowKey {
        FlowKey::tcp(
            Endpoint::new([10, 0, 0, 1], port),
            Endpoint::new([192, 0, 2, 1], 80),
        )
    }

    fn new_conn(port: u16) -> NewConn {
        NewConn {
            key: key(port),
            dest: DestId(5),
            dest_addr: Endpoint::new([10, 1, 0, 5], 80),
            return_path: ReturnPath::Bypass,
            template: None,
        }
    }

    /// Counts activations, to check install keeps ActiveConn right.
    #[derive(Default)]
    struct Count {
        bound: i64,
        active: i64,
    }
    impl DestCounters for Count {
        fn conn_bound(&mut self, _: DestId) {
            self.bound += 1;
        }
        fn conn_activated(&mut self, _: DestId) {
            self.active += 1;
        }
        fn conn_deactivated(&mut self, _: DestId) {
            self.active -= 1;
        }
        fn conn_released(&mut self, _: DestId, was_active: bool) {
            self.bound -= 1;
            if was_active {
                self.active -= 1;
            }
        }
        fn template_bound(&mut self, _: DestId) {}
        fn template_released(&mut self, _: DestId) {}
    }

    #[test]
    fn tcp_syncs_like_ipvs_at_the_threshold_then_every_period_and_on_closing_states() {
        let (table, mut shards) = ConnTable::new(Config::new(1, 64));
        let shard = &mut shards[0];
        let policy = SyncPolicy::default();
        let conn = shard.insert(new_conn(40000), 10, &mut NoCounters).unwrap();
        let mut due = Vec::new();
        let flags = [TcpFlags::SYN, TcpFlags::ACK];
        for pkt in 1..=110u32 {
            let f = flags[(pkt as usize - 1).min(1)];
            shard
                .on_packet(conn.flow, Direction::Input, f, 10, &mut NoCounters)
                .unwrap();
            if table.sync_due(conn.flow, policy) {
                due.push(pkt);
            }
        }
        // SYN_RECV is never synced; ESTABLISHED at packets 3, 53, 103.
        assert_eq!(due, vec![3, 53, 103]);
        // A client FIN moves to FIN_WAIT (DR: input only): synced at once, once.
        let fin = TcpFlags::FIN_ACK;
        shard
            .on_packet(conn.flow, Direction::Input, fin, 10, &mut NoCounters)
            .unwrap();
        assert!(table.sync_due(conn.flow, policy));
        shard
            .on_packet(
                conn.flow,
                Direction::Input,
                TcpFlags::ACK,
                10,
                &mut NoCounters,
            )
            .unwrap();
        assert!(
            !table.sync_due(conn.flow, policy),
            "no change, not at the count"
        );
    }

    #[test]
    fn udp_syncs_by_count_and_period_zero_syncs_once() {
        let (table, mut shards) = ConnTable::new(Config::new(1, 64));
        let shard = &mut shards[0];
        let mut n = new_conn(5353);
        n.key = FlowKey::udp(n.key.src, n.key.dst);
        let conn = shard.insert(n, 10, &mut NoCounters).unwrap();
        let once = SyncPolicy {
            threshold: 2,
            period: 0,
        };
        let due: Vec<u32> = (1..=10)
            .filter(|_| {
                shard
                    .on_packet(
                        conn.flow,
                        Direction::Input,
                        TcpFlags::default(),
                        10,
                        &mut NoCounters,
                    )
                    .unwrap();
                table.sync_due(conn.flow, once)
            })
            .collect();
        assert_eq!(due, vec![2]);
    }

    #[test]
    fn install_creates_then_updates_with_the_masters_state_and_time() {
        let (table, mut shards) = ConnTable::new(Config::new(2, 64));
        let mut counters = Count::default();
        let shard = &mut shards[1];
        let c = shard
            .install(
                new_conn(40000),
                TcpState::Established,
                900,
                100,
                &mut counters,
            )
            .unwrap();
        assert_eq!(
            (c.state, c.active, c.expires),
            (TcpState::Established, true, 1000)
        );
        assert_eq!((counters.bound, counters.active), (1, 1));
        let listed = table.export(c.flow).unwrap();
        assert!(listed.synced && listed.active && !listed.template);
        // An update to FIN_WAIT moves it to InActConn and shortens its time.
        let c2 = shard
            .install(new_conn(40000), TcpState::FinWait, 120, 110, &mut counters)
            .unwrap();
        assert_eq!(c2.flow, c.flow, "the same entry");
        assert_eq!(
            (c2.state, c2.active, c2.expires),
            (TcpState::FinWait, false, 230)
        );
        assert_eq!((counters.bound, counters.active), (1, 0));
        // The flow's packets find it; the first one clears the synced mark.
        let Inbound::Hit(hit) = shard.lookup_inbound(&key(40000), &AllAvailable, &mut counters)
        else {
            panic!("installed entry not found")
        };
        shard
            .on_packet(
                hit.flow,
                Direction::Input,
                TcpFlags::ACK,
                111,
                &mut counters,
            )
            .unwrap();
        assert!(!table.export(c.flow).unwrap().synced);
        // It expires on the master's time.
        assert_eq!(shard.expire(231 + 120, &mut counters), 1);
        assert_eq!((counters.bound, counters.active), (0, 0));
    }

    #[test]
    fn a_short_remaining_time_expires_on_time() {
        let (_, mut shards) = ConnTable::new(Config::new(1, 64));
        let shard = &mut shards[0];
        shard
            .install(new_conn(1), TcpState::TimeWait, 1, 50, &mut NoCounters)
            .unwrap();
        assert_eq!(shard.expire(51, &mut NoCounters), 1);
    }

    /// Client 10.0.0.1's template for TCP 192.0.2.1:80, per host.
    fn template_key() -> TemplateKey {
        let service = ServiceKey::Addr {
            proto: Protocol::Tcp,
            vip: [192, 0, 2, 1].into(),
            port: 80,
        };
        TemplateKey::new(
            &service,
            [10, 0, 0, 1].into(),
            PersistenceMask::v4_prefix(32),
        )
    }

    #[test]
    fn templates_install_refresh_and_move() {
        let (table, mut shards) = ConnTable::new(Config::new(1, 64));
        let shard = &mut shards[0];
        let tkey = template_key();
        let rs = Endpoint::new([10, 1, 0, 5], 80);
        let t = shard
            .install_template(&tkey, DestId(5), rs, 300, 10, &mut NoCounters)
            .unwrap();
        assert!(table.export(t.flow).unwrap().synced);
        let found = table.find_template(&tkey, &AllAvailable).unwrap();
        assert_eq!((found.dest, found.expires), (DestId(5), 310));
        let again = shard
            .install_template(&tkey, DestId(5), rs, 300, 20, &mut NoCounters)
            .unwrap();
        assert_eq!(again.flow, t.flow);
        assert_eq!(
            table.find_template(&tkey, &AllAvailable).unwrap().expires,
            320
        );
        let moved = shard
            .install_template(&tkey, DestId(6), rs, 300, 30, &mut NoCounters)
            .unwrap();
        assert_ne!(moved.flow, t.flow);
        assert_eq!(
            table.find_template(&tkey, &AllAvailable).unwrap().dest,
            DestId(6)
        );
    }

    #[test]
    fn template_of_names_the_controlling_template() {
        let (table, mut shards) = ConnTable::new(Config::new(1, 64));
        let shard = &mut shards[0];
        let tkey = template_key();
        let t = shard
            .insert_template(
                &tkey,
                DestId(5),
                Endpoint::new([10, 1, 0, 5], 80),
                300,
                10,
                &mut NoCounters,
            )
            .unwrap();
        let mut n = new_conn(1);
        n.template = Some(t);
        let c = shard.insert(n, 10, &mut NoCounters).unwrap();
        assert_eq!(table.template_of(c.flow), Some(t.flow));
        let plain = shard.insert(new_conn(2), 10, &mut NoCounters).unwrap();
        assert_eq!(table.template_of(plain.flow), None);
        let exported = table.export(t.flow).unwrap();
        assert!(exported.template && exported.client.port == 0);
    }
}
