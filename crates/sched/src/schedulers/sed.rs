//! sed — shortest expected delay.
//!
//! The server with the least `(ActiveConn + 1) / weight`: the delay a new connection would
//! see if every server worked its active connections at a speed proportional to its weight.
//! Inactive connections do not count. Compared by cross multiplication, ties to the first.

use crate::least::weighted_least;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// `ActiveConn + 1`: the expected number of jobs including the new one.
#[inline]
pub(crate) fn expected_jobs(server: &RealServer) -> u64 {
    server.load.active() as u64 + 1
}

/// Stateless: all it needs is the shared connection counters.
#[derive(Debug, Default)]
pub struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        weighted_least(servers, 0..servers.len(), expected_jobs)
    }
}
