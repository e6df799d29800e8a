//! "Least loaded" selection shared by wlc, lblc and lblcr.
//!
//! Load is `overhead / weight`. Comparing fractions without floats: for positive weights,
//! `h1/w1 > h2/w2` is `h1*w2 > h2*w1`, and a strict `>` keeps the first server of a tie, as
//! IPVS does. Overheads are below 2^40 and weights below 2^16, so products fit in a u64.

use crate::server::RealServer;

/// The index, among `candidates`, of the server with the least `overhead / weight` that
/// accepts new connections; `None` when none does.
#[inline]
pub(crate) fn weighted_least(
    servers: &[RealServer],
    candidates: impl Iterator<Item = usize>,
    overhead: impl Fn(&RealServer) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for i in candidates {
        let server = &servers[i];
        if !server.accepts_new() {
            continue;
        }
        let oh = overhead(server);
        match least {
            Some((l, loh)) if loh * server.weight as u64 <= oh * servers[l].weight as u64 => {}
            _ => least = Some((i, oh)),
        }
    }
    least.map(|(i, _)| i)
}

/// lblc/lblcr's locality rule: a cached server is "overloaded" when it has more active
/// connections than its weight while some server in the service has fewer than half its
/// weight. Then the cache entry is not used and the client's destination is rescheduled.
pub(crate) fn busier_than_others(server: &RealServer, servers: &[RealServer]) -> bool {
    server.load.active() > server.weight
        && servers
            .iter()
            .any(|d| (d.load.active() as u64) * 2 < d.weight as u64)
}

/// Greatest common divisor of the positive numbers in `values`, 0 when there are none.
pub(crate) fn gcd_of(values: impl Iterator<Item = u32>) -> u32 {
    fn gcd(mut a: u32, mut b: u32) -> u32 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    values.filter(|&v| v > 0).fold(0, gcd)
}
