//! lblc — locality-based least connection.
//!
//! For cache clusters: requests for one destination address go to the same server, so its
//! cache stays warm. The first request for a destination takes the wlc choice and remembers
//! it. Later requests reuse the remembered server unless it may not take new connections, or
//! it has more active connections than its weight while some server has fewer than half its
//! weight; then the destination is scheduled again with wlc and the new server remembered.

use super::locality::{CacheEntry, LocalityCache, addr_key};
use crate::least::{busier_than_others, weighted_least};
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// The server remembered for one destination address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedServer {
    server: u32,
    last_use_ms: u64,
}

impl CacheEntry for CachedServer {
    fn last_use_ms(&self) -> u64 {
        self.last_use_ms
    }

    fn remap(&mut self, new_index: &[Option<u32>]) -> bool {
        match new_index.get(self.server as usize).copied().flatten() {
            Some(i) => {
                self.server = i;
                true
            }
            None => false,
        }
    }
}

/// The destination cache.
#[derive(Debug)]
pub struct LocalityLeastConnection {
    cache: LocalityCache<CachedServer>,
}

impl LocalityLeastConnection {
    /// An lblc scheduler whose unused entries expire after `expiration_ms`.
    pub fn new(expiration_ms: u64) -> Self {
        LocalityLeastConnection {
            cache: LocalityCache::new(expiration_ms),
        }
    }

    /// How many destinations are remembered.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

impl Scheduler for LocalityLeastConnection {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn update(&mut self, servers: &[RealServer]) {
        self.cache.update(servers);
    }

    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize> {
        let key = addr_key(request.dst);
        if let Some(entry) = self.cache.get_mut(key) {
            entry.last_use_ms = request.now_ms;
            let index = entry.server as usize;
            if let Some(server) = servers.get(index)
                && server.accepts_new()
                && !busier_than_others(server, servers)
            {
                return Some(index);
            }
        }
        let chosen = weighted_least(servers, 0..servers.len(), |s| s.load.overhead())?;
        let entry = CachedServer {
            server: chosen as u32,
            last_use_ms: request.now_ms,
        };
        self.cache.insert(key, entry);
        Some(chosen)
    }

    fn tick(&mut self, _servers: &[RealServer], now_ms: u64) {
        self.cache.tick(now_ms);
    }
}
