//! twos — weighted random "power of two choices".
//!
//! Draws two servers at random, each with probability proportional to its weight, and gives
//! the connection to the one with the lower `overhead / weight`. It spreads load nearly as
//! well as wlc while looking at only two servers' counters, which is what makes it cheap when
//! many directors share a pool.
//!
//! IPVS draws in `[0, total]`, which gives the first server one extra chance; xvs draws in
//! `[0, total)` so each server is drawn exactly in proportion to its weight.

use crate::scheduler::{Request, Scheduler};
use crate::server::RealServer;

/// Per-worker random state (xorshift64*), seeded from the service options.
#[derive(Debug)]
pub struct TwoChoices {
    rng: u64,
}

impl TwoChoices {
    /// A scheduler whose random sequence is fixed by `seed` (0 is replaced: xorshift
    /// must not start at zero).
    pub fn new(seed: u64) -> Self {
        TwoChoices {
            rng: if seed == 0 {
                0x2545_F491_4F6C_DD1D
            } else {
                seed
            },
        }
    }

    /// A uniform draw in `0..bound` (Lemire's multiply-shift; `bound` > 0).
    #[inline]
    fn below(&mut self, bound: u64) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((random as u128 * bound as u128) >> 64) as u64
    }
}

impl Scheduler for TwoChoices {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn update(&mut self, _servers: &[RealServer]) {}

    fn pick(&mut self, servers: &[RealServer], _request: &Request) -> Option<usize> {
        let total: u64 = servers
            .iter()
            .filter(|s| s.accepts_new())
            .map(|s| s.weight as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let (draw1, draw2) = (self.below(total), self.below(total));
        let (mut first, mut second) = (None, None);
        let mut cumulative = 0;
        for (i, server) in servers.iter().enumerate().filter(|(_, s)| s.accepts_new()) {
            cumulative += server.weight as u64;
            if first.is_none() && draw1 < cumulative {
                first = Some(i);
            }
            if second.is_none() && draw2 < cumulative {
                second = Some(i);
            }
            if first.is_some() && second.is_some() {
                break;
            }
        }
        let (a, b) = (first?, second?);
        let (sa, sb) = (&servers[a], &servers[b]);
        // The second draw wins only if strictly less loaded: oh_a/w_a > oh_b/w_b.
        if sa.load.overhead() * sb.weight as u64 > sb.load.overhead() * sa.weight as u64 {
            Some(b)
        } else {
            Some(a)
        }
    }
}
