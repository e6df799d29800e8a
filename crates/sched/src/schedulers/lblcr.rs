//! lblcr — locality-based least connection with replication.
//!
//! Like lblc, but each destination address maps to a *set* of servers, so a popular
//! destination can be served by several caches. A request goes to the least loaded member
//! (`overhead / weight`). When that member is busier than its weight while another server is
//! below half of its own, or no member may take the connection, the wlc choice over all
//! servers joins the set. When a set of more than one has not changed for `lblc_expiration`,
//! its most loaded member leaves it, so sets shrink back once the rush is over.
//!
//! Sets hold at most [`SET_CAPACITY`] servers so they live inline without allocation; a new
//! member then replaces the most loaded one.

use super::locality::{CacheEntry, LocalityCache, addr_key};
use crate::least::{busier_than_others, weighted_least};
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// The most servers one destination's set holds.
pub const SET_CAPACITY: usize = 8;

/// The server set of one destination address, newest member first (as IPVS adds at the
/// head of its list, which decides ties).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerSet {
    members: [u32; SET_CAPACITY],
    len: u8,
    last_modified_ms: u64,
    last_use_ms: u64,
}

impl ServerSet {
    fn new(server: usize, now_ms: u64) -> Self {
        let mut members = [0; SET_CAPACITY];
        members[0] = server as u32;
        ServerSet {
            members,
            len: 1,
            last_modified_ms: now_ms,
            last_use_ms: now_ms,
        }
    }

    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.members[..self.len as usize]
            .iter()
            .map(|&m| m as usize)
    }

    /// The least loaded member that may take a new connection.
    fn least_loaded(&self, servers: &[RealServer]) -> Option<usize> {
        let members = self.members().filter(|&m| m < servers.len());
        weighted_least(servers, members, |s| s.load.overhead())
    }

    /// The most loaded member with a positive weight (`moh/mw < doh/dw`, first wins ties).
    fn most_loaded(&self, servers: &[RealServer]) -> Option<usize> {
        let mut most: Option<(usize, u64)> = None;
        for m in self.members().filter(|&m| m < servers.len()) {
            let s = &servers[m];
            if s.weight == 0 {
                continue;
            }
            let oh = s.load.overhead();
            match most {
                Some((b, moh)) if moh * (s.weight as u64) >= oh * servers[b].weight as u64 => {}
                _ => most = Some((m, oh)),
            }
        }
        most.map(|(m, _)| m)
    }

    fn remove(&mut self, server: usize, now_ms: u64) {
        let len = self.len as usize;
        if let Some(pos) = self.members[..len]
            .iter()
            .position(|&m| m as usize == server)
        {
            self.members.copy_within(pos + 1..len, pos);
            self.len -= 1;
            self.last_modified_ms = now_ms;
        }
    }

    /// Adds `server` at the head unless it is a member already.
    fn insert(&mut self, server: usize, servers: &[RealServer], now_ms: u64) {
        if self.members().any(|m| m == server) {
            return;
        }
        if self.len as usize == SET_CAPACITY {
            let evict = self
                .most_loaded(servers)
                .unwrap_or(self.members[SET_CAPACITY - 1] as usize);
            self.remove(evict, now_ms);
        }
        let len = self.len as usize;
        self.members.copy_within(0..len, 1);
        self.members[0] = server as u32;
        self.len += 1;
        self.last_modified_ms = now_ms;
    }
}

impl CacheEntry for ServerSet {
    fn last_use_ms(&self) -> u64 {
        self.last_use_ms
    }

    fn remap(&mut self, new_index: &[Option<u32>]) -> bool {
        let mut kept = 0;
        for i in 0..self.len as usize {
            if let Some(new) = new_index.get(self.members[i] as usize).copied().flatten() {
                self.members[kept] = new;
                kept += 1;
            }
        }
        self.len = kept as u8;
        kept > 0
    }
}

/// The destination cache of server sets.
#[derive(Debug)]
pub struct LocalityLeastConnectionReplicated {
    cache: LocalityCache<ServerSet>,
}

impl LocalityLeastConnectionReplicated {
    /// An lblcr scheduler: entries expire, and sets shrink, after `expiration_ms`.
    pub fn new(expiration_ms: u64) -> Self {
        LocalityLeastConnectionReplicated {
            cache: LocalityCache::new(expiration_ms),
        }
    }

    /// The server set of destination `dst`, newest first (for tests and diagnostics).
    pub fn set_of(&mut self, dst: std::net::IpAddr) -> Vec<usize> {
        self.cache
            .get_mut(addr_key(dst))
            .map(|s| s.members().collect())
            .unwrap_or_default()
    }
}

impl Scheduler for LocalityLeastConnectionReplicated {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn update(&mut self, servers: &[RealServer]) {
        self.cache.update(servers);
    }

    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize> {
        let key = addr_key(request.dst);
        let now = request.now_ms;
        let expiration = self.cache.expiration_ms();
        if let Some(set) = self.cache.get_mut(key) {
            set.last_use_ms = now;
            let least = set.least_loaded(servers);
            if set.len > 1
                && now > set.last_modified_ms.saturating_add(expiration)
                && let Some(most) = set.most_loaded(servers)
            {
                set.remove(most, now);
            }
            if let Some(least) = least
                && !busier_than_others(&servers[least], servers)
            {
                return Some(least);
            }
            let chosen = weighted_least(servers, 0..servers.len(), |s| s.load.overhead())?;
            set.insert(chosen, servers, now);
            return Some(chosen);
        }
        let chosen = weighted_least(servers, 0..servers.len(), |s| s.load.overhead())?;
        self.cache.insert(key, ServerSet::new(chosen, now));
        Some(chosen)
    }

    fn tick(&mut self, _servers: &[RealServer], now_ms: u64) {
        self.cache.tick(now_ms);
    }
}
