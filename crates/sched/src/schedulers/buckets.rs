//! The 256-bucket table behind dh and sh.
//!
//! Buckets are dealt to the servers in list order, each server taking as many consecutive
//! buckets as its weight before the next one's turn, round and round until all 256 are dealt
//! (IPVS's `ip_vs_sh_reassign`). A server therefore owns a share of the hash space in
//! proportion to its weight. A weight-0 server still owns one bucket per round, as in IPVS,
//! and clients hashing there find no server unless the fallback flag is set.

use crate::server::RealServer;

/// log2 of the table size, IPVS's `IP_VS_SH_TAB_BITS`.
pub(crate) const BUCKET_BITS: u32 = 8;
const SIZE: usize = 1 << BUCKET_BITS;
const EMPTY: u32 = u32::MAX;

/// Bucket -> index into the server list.
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    slots: [u32; SIZE],
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            slots: [EMPTY; SIZE],
        }
    }
}

impl Buckets {
    /// Deals the buckets again for `servers`.
    pub(crate) fn assign(&mut self, servers: &[RealServer]) {
        if servers.is_empty() {
            self.slots = [EMPTY; SIZE];
            return;
        }
        let (mut server, mut dealt) = (0usize, 0u32);
        for slot in self.slots.iter_mut() {
            *slot = server as u32;
            dealt += 1;
            if dealt >= servers[server].weight {
                server = (server + 1) % servers.len();
                dealt = 0;
            }
        }
    }

    /// The server in bucket `bucket` (taken modulo the table size).
    #[inline]
    pub(crate) fn get(&self, bucket: u32) -> Option<usize> {
        let slot = self.slots[bucket as usize & (SIZE - 1)];
        (slot != EMPTY).then_some(slot as usize)
    }

    /// Looks `key(0)` up; with `fallback`, when that server may not take the connection,
    /// tries `key(offset)` for offsets starting at the first bucket's number, all 256 of them
    /// (IPVS's deterministic "random" restart point).
    #[inline]
    pub(crate) fn lookup(
        &self,
        servers: &[RealServer],
        fallback: bool,
        key: impl Fn(u32) -> u32,
    ) -> Option<usize> {
        let first_bucket = key(0) & (SIZE as u32 - 1);
        let first = self.get(first_bucket)?;
        if servers[first].accepts_new() {
            return Some(first);
        }
        if !fallback {
            return None;
        }
        for offset in 0..SIZE as u32 {
            let retry = (offset + first_bucket) % SIZE as u32;
            let server = self.get(key(retry))?;
            if servers[server].accepts_new() {
                return Some(server);
            }
        }
        None
    }
}
