//! sh — source hashing.
//!
//! The client address (and with `sh-port` its port) hashes to one of 256 buckets dealt to
//! the servers by weight, so a client keeps its server as long as the server list does not
//! change. If that server may not take the connection, the connection is refused, unless
//! `sh-fallback` is set: then the table is walked from a point fixed by the hash to the next
//! server that can.

use super::buckets::{BUCKET_BITS, Buckets};
use crate::SchedFlags;
use crate::hash::{fold_addr, hash_32};
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// The bucket table and the `-b` flags.
#[derive(Debug, Default)]
pub struct SourceHashing {
    buckets: Buckets,
    flags: SchedFlags,
}

impl SourceHashing {
    /// An sh scheduler honouring `sh-fallback` and `sh-port`.
    pub fn new(flags: SchedFlags) -> Self {
        SourceHashing {
            buckets: Buckets::default(),
            flags,
        }
    }
}

impl Scheduler for SourceHashing {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn update(&mut self, servers: &[RealServer]) {
        self.buckets.assign(servers);
    }

    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize> {
        let port = if self.flags.port {
            request.src_port as u32
        } else {
            0
        };
        let folded = port.wrapping_add(fold_addr(request.src));
        let hashed = hash_32(folded, BUCKET_BITS);
        self.buckets.lookup(servers, self.flags.fallback, |offset| {
            offset.wrapping_add(hashed)
        })
    }
}
