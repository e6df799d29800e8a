//! mh — Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Each server gets a preference list over a prime-sized table, `offset + j * skip (mod M)`
//! with `offset = h1(server) mod M` and `skip = h2(server) mod (M - 1) + 1`; the servers take
//! turns claiming their next free preferred slot until all M slots are owned. A server with
//! twice the weight takes two slots per turn. The client address (with `mh-port`, also its
//! port) then hashes to one slot. Removing one of N servers moves about 1/N of the clients,
//! and every director builds the same table from the same server set.
//!
//! The servers take their turns in a canonical order, sorted by (address, port), not in the
//! order they were added: IPVS walks its list as inserted, so two directors given the same
//! servers in another order build different tables. Here the table depends only on the set
//! of (address, port, weight), which is what lets N directors behind ECMP agree on every
//! flow without sharing state (see the README's "Running at scale").
//!
//! Slots are claimed by the server's weight before quiescing (`last_weight`), so setting a
//! weight to 0 moves nobody: that server's clients are refused, or with `mh-fallback` walk on
//! to another server, and come back when the weight returns.

use crate::hash::keyed_hash;
use crate::least::gcd_of;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;
use crate::{DEFAULT_MH_TABLE_SIZE, SchedFlags};

/// Key of h1 (offset, and the client lookup), IPVS's constant.
const KEY_OFFSET: u64 = 2_654_435_761;
/// Key of h2 (skip), IPVS's constant.
const KEY_SKIP: u64 = 2_654_446_892;
/// Turns per server are capped at 2^TURN_BITS by shifting all weights right together
/// (IPVS's `IP_VS_MH_TAB_BITS`), so one heavy server cannot take the table in one turn.
const TURN_BITS: u32 = 6;
/// Marks a slot owned by no server (no server has a positive weight).
const EMPTY: u16 = u16::MAX;

/// The lookup table and the `-b` flags.
#[derive(Debug)]
pub struct MaglevHashing {
    table: Vec<u16>,
    flags: SchedFlags,
}

impl MaglevHashing {
    /// An mh scheduler with a table of `table_size` slots, which must be prime (the registry
    /// checks it); IPVS uses 4093, Maglev's paper and Katran 65537.
    pub fn new(flags: SchedFlags, table_size: u32) -> Self {
        MaglevHashing {
            table: vec![EMPTY; table_size as usize],
            flags,
        }
    }

    /// The table as built, one server index per slot (`None` for an empty table). Two builds
    /// from the same server list are identical.
    pub fn table(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.table
            .iter()
            .map(|&s| (s != EMPTY).then_some(s as usize))
    }

    fn slot_for(&self, request: &Request, offset: u32) -> usize {
        let port = if self.flags.port { request.src_port } else { 0 };
        keyed_hash(KEY_OFFSET, request.src, port, offset) as usize % self.table.len()
    }

    /// How many slots each server claims per round: `last_weight / gcd`, shifted right so the
    /// largest fits in TURN_BITS bits; a positive weight always gets at least one.
    fn turns(servers: &[RealServer]) -> Vec<u32> {
        let gcd = gcd_of(servers.iter().map(|s| s.last_weight));
        if gcd == 0 {
            return vec![0; servers.len()];
        }
        let max = servers.iter().map(|s| s.last_weight).max().unwrap_or(0) / gcd;
        let shift = (u32::BITS - max.leading_zeros()).saturating_sub(TURN_BITS);
        servers
            .iter()
            .map(|s| match (s.last_weight / gcd) >> shift {
                0 => u32::from(s.last_weight > 0),
                turns => turns,
            })
            .collect()
    }
}

impl Default for MaglevHashing {
    fn default() -> Self {
        MaglevHashing::new(SchedFlags::default(), DEFAULT_MH_TABLE_SIZE)
    }
}

impl Scheduler for MaglevHashing {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn update(&mut self, servers: &[RealServer]) {
        let m = self.table.len();
        self.table.fill(EMPTY);
        // At most 65535 servers have a slot index; more cannot be told apart in u16.
        let servers = &servers[..servers.len().min(EMPTY as usize)];
        let turns = Self::turns(servers);
        if turns.iter().all(|&t| t == 0) {
            return;
        }
        // Turn order: by (address, port), whatever the list order (see the module doc).
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.sort_unstable_by_key(|&i| (servers[i].addr, servers[i].port));
        // Per server: next preferred slot and the step between preferences.
        let mut next: Vec<usize> = Vec::with_capacity(servers.len());
        let mut skip: Vec<usize> = Vec::with_capacity(servers.len());
        for s in servers {
            next.push(keyed_hash(KEY_OFFSET, s.addr, s.port, 0) as usize % m);
            skip.push(keyed_hash(KEY_SKIP, s.addr, s.port, 0) as usize % (m - 1) + 1);
        }
        let mut filled = 0;
        while filled < m {
            for &i in &order {
                let server_turns = turns[i];
                for _ in 0..server_turns {
                    while self.table[next[i]] != EMPTY {
                        next[i] = (next[i] + skip[i]) % m;
                    }
                    self.table[next[i]] = i as u16;
                    filled += 1;
                    if filled == m {
                        return;
                    }
                }
            }
        }
    }

    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize> {
        let first_slot = self.slot_for(request, 0);
        let first = self.table[first_slot];
        if first == EMPTY {
            return None;
        }
        if servers[first as usize].accepts_new() {
            return Some(first as usize);
        }
        if !self.flags.fallback {
            return None;
        }
        // mh-fallback: rehash with growing offsets, from a start fixed by the first slot, so
        // every director walks to the same replacement.
        let m = self.table.len();
        for offset in 0..m {
            let retry = ((offset + first_slot) % m) as u32;
            let server = self.table[self.slot_for(request, retry)];
            if server == EMPTY {
                return None;
            }
            if servers[server as usize].accepts_new() {
                return Some(server as usize);
            }
        }
        None
    }
}
