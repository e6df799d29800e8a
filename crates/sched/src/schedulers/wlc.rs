//! wlc — weighted least connection, IPVS's default scheduler.
//!
//! The server with the least `overhead / weight`, where
//! `overhead = ActiveConn * 256 + InActConn`. No floats: `h1*w2 > h2*w1` is `h1/w1 > h2/w2`
//! when weights are positive, and weight 0 (quiesced) servers are skipped before comparing.
//! Ties go to the first server in list order.

use crate::least::weighted_least;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Stateless: all it needs is the shared connection counters.
#[derive(Debug, Default)]
pub struct WeightedLeastConnection;

impl Scheduler for WeightedLeastConnection {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        weighted_least(servers, 0..servers.len(), |s| s.load.overhead())
    }
}
