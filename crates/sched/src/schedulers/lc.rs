//! lc — least connection.
//!
//! The server with the least `overhead = ActiveConn * 256 + InActConn`, weights ignored
//! (apart from weight 0, which quiesces). Ties go to the first server in list order.

use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Stateless: all it needs is the shared connection counters.
#[derive(Debug, Default)]
pub struct LeastConnection;

impl Scheduler for LeastConnection {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, server) in servers.iter().enumerate() {
            if !server.accepts_new() {
                continue;
            }
            let overhead = server.load.overhead();
            if least.is_none_or(|(_, l)| overhead < l) {
                least = Some((i, overhead));
            }
        }
        least.map(|(i, _)| i)
    }
}
