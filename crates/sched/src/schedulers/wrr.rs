//! wrr — weighted round robin.
//!
//! IPVS's interleaved WRR: passes over the server list with a current weight `cw` that starts
//! at the largest weight and steps down by the gcd of the weights; each pass picks, in list
//! order, the servers whose weight is at least `cw`. Weights 4,3,2 give
//! `a a b a b c a b c`. The largest weight is lowered by `gcd - 1` so the last pass runs with
//! `cw = 1` and still finds a server whose weight changed below the gcd.

use crate::least::gcd_of;
use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// The WRR mark: where the last pass stopped and with which current weight.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Current list position; `None` is the list head (before the first server).
    position: Option<usize>,
    /// Current required weight.
    cw: i64,
    /// Largest weight, lowered by `di - 1`; 0 when every weight is 0.
    mw: i64,
    /// Step: gcd of the positive weights (1 when there are none).
    di: i64,
}

impl WeightedRoundRobin {
    fn recompute(&mut self, servers: &[RealServer]) {
        self.di = gcd_of(servers.iter().map(|s| s.weight)).max(1) as i64;
        let max = servers.iter().map(|s| s.weight).max().unwrap_or(0) as i64;
        self.mw = (max - (self.di - 1)).max(0);
    }
}

impl Scheduler for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    /// Like IPVS's `ip_vs_wrr_dest_changed`: restart at the head and keep `cw` on the new
    /// step grid.
    fn update(&mut self, servers: &[RealServer]) {
        self.position = None;
        self.recompute(servers);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let last = self.position;
        // Set on the final pass that must stop when it comes back round to `last`.
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        let mut cursor = self.position;
        loop {
            let from = cursor.map_or(0, |i| i + 1);
            for (i, s) in servers.iter().enumerate().skip(from) {
                if s.accepts_new() && s.weight as i64 >= self.cw {
                    self.position = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.position = Some(i);
                    return None;
                }
            }
            cursor = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                // Every server was already tried with cw = 1: all are overloaded.
                if last_pass || last.is_none() {
                    self.position = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}
