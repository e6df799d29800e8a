//! nq — never queue.
//!
//! The first server with no active connection takes the new one at once, whatever the
//! weights; when every server is busy, nq falls back to sed's `(ActiveConn + 1) / weight`.

use super::sed::expected_jobs;
use crate::least::weighted_least;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Stateless: all it needs is the shared connection counters.
#[derive(Debug, Default)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        let idle = servers
            .iter()
            .position(|s| s.accepts_new() && s.load.active() == 0);
        idle.or_else(|| weighted_least(servers, 0..servers.len(), expected_jobs))
    }
}
