//! Rate limits for the ICMP errors the director itself sends ("fragmentation needed", "time
//! exceeded", and TUN's errors passed on to clients), as Linux limits its own: a token bucket
//! per destination (`icmp_ratelimit`: one message per that many milliseconds, bursts of six,
//! `XRLIM_BURST_FACTOR`) and one for all destinations together (`icmp_msgs_per_sec`,
//! `icmp_msgs_burst`). Without them, a flood of oversized or TTL-1 packets at a VIP makes the
//! director answer every one. Unlike Linux, "fragmentation needed" is limited too: the
//! director answers packets from anyone on the internet, and a per-destination rate of one
//! a second still serves path MTU discovery (its sender retries).
//!
//! Each worker has its own limiter: the per-destination buckets are a small direct-mapped
//! table (a destination that collides takes the slot over with a full bucket; the global
//! bucket still bounds the total), and the global rate is split evenly among the workers.
//! Its cells have a single writer (the worker; a reload resets them from the control thread)
//! and are relaxed atomics so the limiter can live beside the worker's counters; nothing is
//! allocated or locked per packet, and the clock is read only when an error is about to be
//! sent.
//!
//! IPv6 destinations (Packet Too Big, Time Exceeded) share the limiter: an IPv6 address is
//! folded to the 32-bit key of its bucket (a collision only shares a bucket, as two IPv4
//! addresses colliding in the direct-mapped table do).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Linux `XRLIM_BURST_FACTOR`: a destination may receive this many messages at once.
const BURST_FACTOR: u64 = 6;
/// Destinations a worker remembers (a power of two).
const PEERS: usize = 256;
/// Millitokens per message in the global bucket (whole tokens would lose fractions).
const MILLI: u64 = 1000;

/// The limits (config `[icmp]`); a zero turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpLimits {
    /// `icmp_ratelimit`: milliseconds per message to one destination (Linux: 1000).
    pub ratelimit_ms: u32,
    /// `icmp_msgs_per_sec`: messages per second to all destinations (Linux: 1000).
    pub msgs_per_sec: u32,
    /// `icmp_msgs_burst`: messages at once to all destinations (Linux: 50).
    pub msgs_burst: u32,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        IcmpLimits {
            ratelimit_ms: 1000,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        }
    }
}

/// One destination's bucket: its address (0 = free), tokens in milliseconds, last refill.
#[derive(Debug, Default)]
struct Peer {
    addr: AtomicU32,
    tokens_ms: AtomicU64,
    last_ms: AtomicU64,
}

/// One worker's ICMP rate limiter.
#[derive(Debug)]
pub struct IcmpLimiter {
    epoch: Instant,
    ratelimit_ms: AtomicU32,
    /// This worker's share of `icmp_msgs_per_sec` and `icmp_msgs_burst`.
    per_sec: AtomicU32,
    burst: AtomicU32,
    global_milli: AtomicU64,
    global_last_ms: AtomicU64,
    peers: Box<[Peer]>,
}

impl Default for IcmpLimiter {
    fn default() -> Self {
        let limiter = IcmpLimiter {
            epoch: Instant::now(),
            ratelimit_ms: AtomicU32::new(0),
            per_sec: AtomicU32::new(0),
            burst: AtomicU32::new(0),
            global_milli: AtomicU64::new(0),
            global_last_ms: AtomicU64::new(0),
            peers: (0..PEERS).map(|_| Peer::default()).collect(),
        };
        limiter.set_limits(IcmpLimits::default(), 1);
        limiter
    }
}

/// Relaxed single-writer cells (see the module comment).
fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn put(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}

impl IcmpLimiter {
    /// Applies `limits` to one of `workers` workers (each takes its share of the total).
    pub fn set_limits(&self, limits: IcmpLimits, workers: usize) {
        let workers = workers.max(1) as u32;
        let share = |v: u32| if v == 0 { 0 } else { (v / workers).max(1) };
        self.ratelimit_ms
            .store(limits.ratelimit_ms, Ordering::Relaxed);
        self.per_sec
            .store(share(limits.msgs_per_sec), Ordering::Relaxed);
        self.burst
            .store(share(limits.msgs_burst), Ordering::Relaxed);
        put(
            &self.global_milli,
            u64::from(self.burst.load(Ordering::Relaxed)) * MILLI,
        );
        for p in self.peers.iter() {
            p.addr.store(0, Ordering::Relaxed);
        }
    }

    /// May an ICMP error go to `dst` now? Takes a token from both buckets if so.
    #[cold]
    pub fn allow(&self, dst: impl Into<IpAddr>) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.allow_at(dst, now)
    }

    /// [`allow`](Self::allow) at `now_ms` milliseconds since the limiter's start.
    pub fn allow_at(&self, dst: impl Into<IpAddr>, now_ms: u64) -> bool {
        let dst = dst.into();
        // The global bucket (Linux icmp_global_allow), in millitokens.
        let per_sec = u64::from(self.per_sec.load(Ordering::Relaxed));
        let global = if per_sec == 0 {
            None
        } else {
            let cap = u64::from(self.burst.load(Ordering::Relaxed)).max(1) * MILLI;
            let elapsed = now_ms.saturating_sub(get(&self.global_last_ms));
            let credit = (get(&self.global_milli) + elapsed * per_sec).min(cap);
            if credit < MILLI {
                return false;
            }
            Some(credit - MILLI)
        };
        // The destination's bucket (Linux inet_peer_xrlim_allow), in milliseconds.
        let timeout = u64::from(self.ratelimit_ms.load(Ordering::Relaxed));
        if timeout != 0 {
            let key = peer_key(dst).max(1);
            let peer = &self.peers[(key.wrapping_mul(0x9e37_79b1) >> 24) as usize % PEERS];
            let cap = BURST_FACTOR * timeout;
            let tokens = if peer.addr.load(Ordering::Relaxed) == key {
                (get(&peer.tokens_ms) + now_ms.saturating_sub(get(&peer.last_ms))).min(cap)
            } else {
                // A new destination (or one that took this slot over) starts with a full
                // bucket, as a fresh inet_peer does.
                peer.addr.store(key, Ordering::Relaxed);
                cap
            };
            put(&peer.last_ms, now_ms);
            if tokens < timeout {
                put(&peer.tokens_ms, tokens);
                return false;
            }
            put(&peer.tokens_ms, tokens - timeout);
        }
        if let Some(left) = global {
            put(&self.global_milli, left);
            put(&self.global_last_ms, now_ms);
        }
        true
    }
}

/// The 32-bit bucket key of a destination: an IPv4 address itself, an IPv6 one folded with
/// every bit taking part.
#[inline]
fn peer_key(dst: IpAddr) -> u32 {
    match dst {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let bits = a.to_bits();
            let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17);
            (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(limits: IcmpLimits, workers: usize) -> IcmpLimiter {
        let l = IcmpLimiter::default();
        l.set_limits(limits, workers);
        l
    }

    fn allowed(l: &IcmpLimiter, dst: Ipv4Addr, at: u64, n: usize) -> usize {
        (0..n).filter(|_| l.allow_at(dst, at)).count()
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    #[test]
    fn one_destination_gets_a_burst_of_six_then_one_per_interval() {
        let l = limiter(IcmpLimits::default(), 1);
        assert_eq!(allowed(&l, A, 0, 100), 6);
        assert_eq!(allowed(&l, A, 999, 10), 0);
        assert_eq!(allowed(&l, A, 1000, 10), 1);
        assert_eq!(allowed(&l, A, 3500, 10), 2);
        // Idle long enough, the burst is back, never more.
        assert_eq!(allowed(&l, A, 60_000, 100), 6);
    }

    #[test]
    fn all_destinations_together_get_the_global_rate() {
        let limits = IcmpLimits {
            ratelimit_ms: 0,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        };
        let l = limiter(limits, 1);
        let mut sent = 0;
        // 10 s of 10 000 messages a second to ever new destinations.
        for ms in 0..10_000u64 {
            for i in 0..10u32 {
                let dst = Ipv4Addr::from(0x0a00_0000 + (ms as u32) * 10 + i);
                sent += usize::from(l.allow_at(dst, ms));
            }
        }
        assert!((10_000..=10_050).contains(&sent), "sent {sent}");
    }

    #[test]
    fn workers_split_the_global_rate() {
        let limits = IcmpLimits {
            ratelimit_ms: 0,
            ..IcmpLimits::default()
        };
        let l = limiter(limits, 4);
        assert_eq!(allowed(&l, A, 0, 100), 12, "a quarter of the burst of 50");
        assert_eq!(
            allowed(&l, A, 1000, 1000),
            12,
            "the burst caps a second's credit"
        );
        assert_eq!(allowed(&l, A, 1004, 1000), 1, "250 a second: one per 4 ms");
    }

    #[test]
    fn a_destination_refused_does_not_spend_the_global_budget() {
        let limits = IcmpLimits {
            ratelimit_ms: 1000,
            msgs_per_sec: 1000,
            msgs_burst: 7,
        };
        let l = limiter(limits, 1);
        assert_eq!(allowed(&l, A, 0, 50), 6);
        let b = Ipv4Addr::new(198, 51, 100, 8);
        assert_eq!(allowed(&l, b, 0, 50), 1, "one global token was left");
    }

    #[test]
    fn zero_limits_turn_limiting_off() {
        let off = IcmpLimits {
            ratelimit_ms: 0,
            msgs_per_sec: 0,
            msgs_burst: 0,
        };
        let l = limiter(off, 2);
        assert_eq!(allowed(&l, A, 0, 10_000), 10_000);
        // The clock-reading form works too.
        assert!(l.allow(A));
    }

    #[test]
    fn ipv6_destinations_are_limited_each_on_their_own() {
        let l = limiter(
            IcmpLimits {
                ratelimit_ms: 1000,
                msgs_per_sec: 0,
                msgs_burst: 0,
            },
            1,
        );
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let sent_a = (0..10).filter(|_| l.allow_at(a, 0)).count();
        let sent_b = (0..10).filter(|_| l.allow_at(b, 0)).count();
        assert_eq!((sent_a, sent_b), (6, 6), "a burst of six each");
        assert!(l.allow_at(a, 1000), "one more a second later");
        assert_ne!(peer_key(a.into()), peer_key(b.into()));
    }
}
