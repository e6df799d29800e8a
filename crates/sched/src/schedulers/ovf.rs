//! ovf — overflow.
//!
//! The highest-weight server takes new connections until its ActiveConn exceeds its weight;
//! then the next highest weight takes the overflow, and so on. The weight works as a soft
//! connection limit. Among equal weights the first in list order wins.

use super::fo::highest_weight;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Stateless: all it needs is the shared connection counters.
#[derive(Debug, Default)]
pub struct Overflow;

impl Scheduler for Overflow {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        highest_weight(servers, |s| s.accepts_new() && s.load.active() <= s.weight)
    }
}
