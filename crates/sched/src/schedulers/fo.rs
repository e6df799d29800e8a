//! fo — weighted failover.
//!
//! Every new connection goes to the server with the highest weight that may take it; the
//! others are standbys that receive traffic only when it is quiesced, OVERLOADED or down.
//! Among equal weights the first in list order wins.

use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Stateless.
#[derive(Debug, Default)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        highest_weight(servers, |s| s.accepts_new())
    }
}

/// The first server of the highest weight among those `eligible` admits.
pub(crate) fn highest_weight(
    servers: &[RealServer],
    eligible: impl Fn(&RealServer) -> bool,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, server) in servers.iter().enumerate() {
        if eligible(server) && best.is_none_or(|b| server.weight > servers[b].weight) {
            best = Some(i);
        }
    }
    best
}
