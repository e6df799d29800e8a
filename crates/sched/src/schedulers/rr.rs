//! rr — round robin.
//!
//! Each new connection goes to the next server after the one picked last, skipping servers
//! that may not take new connections (weight 0, OVERLOADED, unavailable). After a full
//! circle with no taker: no destination available.

use std::net::IpAddr;

use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Round-robin state: the server picked last, named by address so an edit of the list
/// (a server added or removed before it) keeps the rotation where it was.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Index of the last pick; `None` starts the next pick at the first server.
    last: Option<usize>,
    last_id: Option<(IpAddr, u16)>,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn update(&mut self, servers: &[RealServer]) {
        let Some((id, old_index)) = self.last_id.zip(self.last) else {
            return;
        };
        self.last = match servers.iter().position(|s| (s.addr, s.port) == id) {
            Some(i) => Some(i),
            // The last pick was removed: carry on with the server that followed it, as IPVS
            // moves its cursor to the removed entry's predecessor.
            None => old_index.checked_sub(1).filter(|&i| i < servers.len()),
        };
        if self.last.is_none() {
            self.last_id = None;
        }
    }

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        let n = servers.len();
        let start = self.last.map_or(0, |i| i + 1);
        let found = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| servers[i].accepts_new())?;
        self.last = Some(found);
        self.last_id = Some((servers[found].addr, servers[found].port));
        Some(found)
    }
}
