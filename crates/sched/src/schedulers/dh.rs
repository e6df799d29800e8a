//! dh — destination hashing.
//!
//! The destination address the client asked for hashes to one of 256 buckets dealt to the
//! servers, so each destination (a cached site, a firewall's next hop) always meets the same
//! server. If that server may not take the connection, the connection is refused.
//!
//! IPVS deals dh's buckets one per server regardless of weight; xvs deals them by weight like
//! sh, which is the same table when all weights are equal and lets weights matter otherwise.

use super::buckets::{BUCKET_BITS, Buckets};
use crate::hash::{fold_addr, hash_32};
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// The bucket table.
#[derive(Debug, Default)]
pub struct DestinationHashing {
    buckets: Buckets,
}

impl Scheduler for DestinationHashing {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn update(&mut self, servers: &[RealServer]) {
        self.buckets.assign(servers);
    }

    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize> {
        let hashed = hash_32(fold_addr(request.dst), BUCKET_BITS);
        self.buckets
            .lookup(servers, false, |offset| offset.wrapping_add(hashed))
    }
}
