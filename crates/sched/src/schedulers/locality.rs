//! The destination-address cache behind lblc and lblcr, with IPVS's expiry rules.
//!
//! IPVS keeps one entry per destination IP and collects stale ones from a timer every
//! minute: when the table holds more than its soft limit, entries unused for six minutes
//! go (at most half the limit per run); every thirty runs without that, a full check drops
//! entries unused for `lblc_expiration` (24 hours by default).
//!
//! xvs gives the table a fixed capacity, reserved when the scheduler is built, so a pick
//! never allocates: twice IPVS's soft limit. When it is full, a new destination is still
//! scheduled, just not remembered, as IPVS does when it cannot allocate an entry.

use std::net::IpAddr;

use hashbrown::HashMap;

use crate::server::RealServer;

/// IPVS's soft limit: `IP_VS_LBLC_TAB_SIZE * 16` entries.
pub(crate) const SOFT_LIMIT: usize = 1024 * 16;
/// Entries reserved up front; the cache never grows past this.
pub(crate) const CAPACITY: usize = SOFT_LIMIT * 2;
/// How often the garbage collection runs (`CHECK_EXPIRE_INTERVAL`).
const CHECK_INTERVAL_MS: u64 = 60 * 1000;
/// Idle time after which an entry may be collected when over the soft limit.
const ENTRY_TIMEOUT_MS: u64 = 6 * 60 * 1000;
/// Every this many collection runs, a full check (`COUNT_FOR_FULL_EXPIRATION`).
const FULL_CHECK_EVERY: u32 = 30;

/// What the cache needs of its entries.
pub(crate) trait CacheEntry {
    /// When a pick last used the entry.
    fn last_use_ms(&self) -> u64;
    /// Rewrites server indexes after the server list changed: `new_index[old]` is the new
    /// index of old server `old`, or `None` if it was removed. Returns false when nothing is
    /// left and the entry should go.
    fn remap(&mut self, new_index: &[Option<u32>]) -> bool;
}

/// A destination address as a map key: IPv4 as its IPv4-mapped IPv6 form.
#[inline]
pub(crate) fn addr_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// Destination address -> entry, bounded, aged by the pick clock.
#[derive(Debug)]
pub(crate) struct LocalityCache<E> {
    entries: HashMap<u128, E>,
    /// The server list the indexes in entries refer to, by identity, to remap on update.
    ids: Vec<(IpAddr, u16)>,
    expiration_ms: u64,
    next_check_ms: Option<u64>,
    runs: u32,
}

impl<E: CacheEntry> LocalityCache<E> {
    pub(crate) fn new(expiration_ms: u64) -> Self {
        LocalityCache {
            entries: HashMap::with_capacity(CAPACITY),
            ids: Vec::new(),
            expiration_ms,
            next_check_ms: None,
            runs: 1,
        }
    }

    pub(crate) fn expiration_ms(&self) -> u64 {
        self.expiration_ms
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get_mut(&mut self, key: u128) -> Option<&mut E> {
        self.entries.get_mut(&key)
    }

    /// Stores `entry`, replacing any entry of `key`; skipped when the cache is full.
    pub(crate) fn insert(&mut self, key: u128, entry: E) {
        if self.entries.len() < CAPACITY || self.entries.contains_key(&key) {
            self.entries.insert(key, entry);
        }
    }

    /// Follows the servers to their new indexes; entries of removed servers go.
    pub(crate) fn update(&mut self, servers: &[RealServer]) {
        let new_index: Vec<Option<u32>> = self
            .ids
            .iter()
            .map(|id| {
                servers
                    .iter()
                    .position(|s| (s.addr, s.port) == *id)
                    .map(|i| i as u32)
            })
            .collect();
        self.entries.retain(|_, entry| entry.remap(&new_index));
        self.ids = servers.iter().map(|s| (s.addr, s.port)).collect();
    }

    /// Runs the collection when its minute has come.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        let due = *self.next_check_ms.get_or_insert(now_ms + CHECK_INTERVAL_MS);
        if now_ms < due {
            return;
        }
        self.next_check_ms = Some(now_ms + CHECK_INTERVAL_MS);
        if self.runs.is_multiple_of(FULL_CHECK_EVERY) {
            let expiration = self.expiration_ms;
            self.entries
                .retain(|_, e| now_ms < e.last_use_ms().saturating_add(expiration));
            self.runs = 1;
            return;
        }
        if self.entries.len() <= SOFT_LIMIT {
            self.runs += 1;
            return;
        }
        let mut goal = ((self.entries.len() - SOFT_LIMIT) * 4 / 3).min(SOFT_LIMIT / 2);
        self.entries.retain(|_, e| {
            if goal == 0 || now_ms < e.last_use_ms() + ENTRY_TIMEOUT_MS {
                return true;
            }
            goal -= 1;
            false
        });
    }
}
