//! Per-worker counters: written by one worker, read by the side thread.
//!
//! Each worker has its own cells, so counting takes no lock and no cache line bounces between
//! workers. A cell has a single writer, so a relaxed load and store (no atomic
//! read-modify-write) is enough; the side thread's relaxed loads may lag by a packet.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use xvs_forwarders::Reason;

use crate::icmp_limit::IcmpLimiter;
use crate::packet_io::FrameAccount;
use crate::service::snapshot::MAX_DESTS;

/// Why the pipeline dropped a frame, beyond the forwarders' parse and rewrite reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Drop {
    /// Not to a virtual service and not the reply of a NAT connection.
    NotForUs,
    /// TCP packet without SYN for no known connection (IPVS schedules only on SYN, or with
    /// `sloppy_tcp` on anything but an RST).
    NoConnection,
    /// The scheduler found no real server that may take a new connection.
    NoDestAvailable,
    /// The connection table is full: new connection refused.
    TableFull,
    /// The connection's real server was removed and `expire_nodest_conn` is off.
    DestRemoved,
    /// No route to the next hop.
    NoRoute,
    /// The next hop's MAC is not resolved yet (resolution was requested).
    NeighbourUnresolved,
    /// An ICMP error that quotes no tracked connection.
    IcmpNoConnection,
    /// The forwarders refused the frame (see the forwarders reason counters).
    Refused,
    /// A packet for a local real server could not be handed to the kernel (no TUN device,
    /// or its write failed).
    LocalDeliveryFailed,
    /// An ICMP error the director would have sent was over its rate limit
    /// ([`IcmpLimiter`]).
    IcmpRateLimited,
}

impl Drop {
    /// Every variant, in discriminant order.
    pub const ALL: [Drop; 11] = [
        Drop::NotForUs,
        Drop::NoConnection,
        Drop::NoDestAvailable,
        Drop::TableFull,
        Drop::DestRemoved,
        Drop::NoRoute,
        Drop::NeighbourUnresolved,
        Drop::IcmpNoConnection,
        Drop::Refused,
        Drop::LocalDeliveryFailed,
        Drop::IcmpRateLimited,
    ];
    /// Number of variants.
    pub const COUNT: usize = Self::ALL.len();

    /// Name shown in statistics.
    pub fn name(self) -> &'static str {
        match self {
            Drop::NotForUs => "not_for_us",
            Drop::NoConnection => "no_connection",
            Drop::NoDestAvailable => "no_dest_available",
            Drop::TableFull => "table_full",
            Drop::DestRemoved => "dest_removed",
            Drop::NoRoute => "no_route",
            Drop::NeighbourUnresolved => "neighbour_unresolved",
            Drop::IcmpNoConnection => "icmp_no_connection",
            Drop::Refused => "refused",
            Drop::LocalDeliveryFailed => "local_delivery_failed",
            Drop::IcmpRateLimited => "icmp_rate_limited",
        }
    }
}

/// One real server's traffic as one worker saw it (IPVS's `ip_vs_stats` fields).
#[derive(Debug, Default)]
pub struct DestCells {
    /// Connections scheduled to it.
    pub conns: AtomicU64,
    /// Packets client -> real server.
    pub in_pkts: AtomicU64,
    /// Packets real server -> client (NAT only: DR and TUN replies bypass the director).
    pub out_pkts: AtomicU64,
    /// IP bytes client -> real server.
    pub in_bytes: AtomicU64,
    /// IP bytes real server -> client.
    pub out_bytes: AtomicU64,
}

/// Adds `n` to a single-writer cell.
#[inline]
pub fn add(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The frame I/O's own losses on one port, copied from the ports by the worker (the ports
/// keep them as plain numbers; this makes them readable from the side thread).
#[derive(Debug, Default)]
pub struct PortCells {
    /// Frames the kernel dropped before the receive ring (full, or no free frame).
    pub rx_ring_full: AtomicU64,
    /// Frames dropped because the transmit ring was full.
    pub tx_ring_full: AtomicU64,
    /// Frames whose verdict named a port that does not exist.
    pub bad_verdict: AtomicU64,
    /// Descriptors the kernel returned that xvs had not handed it.
    pub invalid_descs: AtomicU64,
}

/// Where the worker's frames are ([`crate::packet_io::FrameAccount`]), stored by the worker
/// after each turn that received frames and at housekeeping, so the side thread and the
/// control socket can read it. One writer; a sequence counter (a seqlock, odd while
/// storing) lets a reader take the four values of one turn together, so their sum is
/// checkable: a torn read would look like a leaked frame.
#[derive(Debug, Default)]
pub struct FrameCells {
    seq: AtomicU32,
    /// Chunks of the frame memory.
    pub total: AtomicU32,
    /// Chunks in the free list.
    pub free: AtomicU32,
    /// Chunks on the kernel's rings (fill ring, or transmitted and not completed).
    pub kernel: AtomicU32,
    /// Chunks held in a batch.
    pub in_flight: AtomicU32,
}

impl FrameCells {
    /// Stores `account` (the worker only).
    pub fn store(&self, account: FrameAccount) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // A reader that sees any of the stores below also sees the odd counter.
        fence(Ordering::Release);
        self.total.store(account.total, Ordering::Relaxed);
        self.free.store(account.free, Ordering::Relaxed);
        self.kernel.store(account.kernel, Ordering::Relaxed);
        self.in_flight.store(account.in_flight, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// What was stored last: the four values of one store, never a mix of two.
    pub fn load(&self) -> FrameAccount {
        let mut tries = 0u32;
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let account = FrameAccount {
                    total: self.total.load(Ordering::Relaxed),
                    free: self.free.load(Ordering::Relaxed),
                    kernel: self.kernel.load(Ordering::Relaxed),
                    in_flight: self.in_flight.load(Ordering::Relaxed),
                };
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return account;
                }
            }
            // The worker is inside a store: a few instructions, unless it was preempted.
            tries += 1;
            if tries.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Ports a worker has at most (one arm, or external and internal).
pub const MAX_PORTS: usize = 2;

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Per real-server slot (the low 16 bits of its `DestId`): an array of exactly
    /// [`MAX_DESTS`], so indexing by a slot needs no bounds check.
    pub dests: Box<[DestCells; MAX_DESTS]>,
    /// Pipeline drops by [`Drop`].
    pub drops: [AtomicU64; Drop::COUNT],
    /// Forwarders refusals by [`Reason`] (malformed frames and refused rewrites).
    pub refused: [AtomicU64; Reason::COUNT],
    /// Frames received.
    pub rx_frames: AtomicU64,
    /// Frames sent on.
    pub tx_frames: AtomicU64,
    /// ICMP errors the director sent back to a sender (fragmentation needed, time exceeded,
    /// and those telling a client about an error with one of its tunnel packets).
    pub icmp_sent: AtomicU64,
    /// Packets handed to the director's own kernel for a local real server.
    pub local_delivered: AtomicU64,
    /// The frame I/O's losses, per port.
    pub ports: [PortCells; MAX_PORTS],
    /// Receive batches by size: bucket `k` counts batches of more than `2^(k-1)` and at
    /// most `2^k` frames (1, 2, 4 ... 64), so an operator sees whether the worker keeps up
    /// (small batches) or is saturated (full ones).
    pub rx_batches: [AtomicU64; RX_BATCH_BUCKETS],
    /// The worker's ICMP error rate limiter: single-writer cells like the counters.
    pub icmp: IcmpLimiter,
    /// Where its frames are.
    pub umem: FrameCells,
}

/// Buckets of [`WorkerCounters::rx_batches`]: 1, 2, 4, 8, 16, 32 and 64 frames.
pub const RX_BATCH_BUCKETS: usize = 7;

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            dests: (0..MAX_DESTS)
                .map(|_| DestCells::default())
                .collect::<Box<[_]>>()
                .try_into()
                .expect("MAX_DESTS cells"),
            drops: Default::default(),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            rx_frames: AtomicU64::new(0),
            tx_frames: AtomicU64::new(0),
            icmp_sent: AtomicU64::new(0),
            local_delivered: AtomicU64::new(0),
            rx_batches: Default::default(),
            ports: Default::default(),
            icmp: IcmpLimiter::default(),
            umem: FrameCells::default(),
        }
    }
}

impl WorkerCounters {
    /// Counts one receive batch of `frames` frames (more than 0).
    #[inline]
    pub fn count_batch(&self, frames: usize) {
        let bucket =
            (frames.max(1).next_power_of_two().trailing_zeros() as usize).min(RX_BATCH_BUCKETS - 1);
        add(&self.rx_batches[bucket], 1);
    }

    /// Counts a drop.
    #[inline]
    pub fn drop(&self, why: Drop) {
        add(&self.drops[why as usize], 1);
    }

    /// Counts a forwarders refusal (also counted as [`Drop::Refused`]).
    #[inline]
    pub fn refuse(&self, reason: Reason) {
        add(&self.refused[reason as usize], 1);
        self.drop(Drop::Refused);
    }

    /// The drop counter of `why`.
    pub fn drops_of(&self, why: Drop) -> u64 {
        self.drops[why as usize].load(Ordering::Relaxed)
    }

    /// The refusal counter of `reason`.
    pub fn refused_of(&self, reason: Reason) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_fall_in_power_of_two_buckets() {
        let c = WorkerCounters::default();
        for frames in [1, 2, 3, 4, 5, 32, 33, 64, 64, 200] {
            c.count_batch(frames);
        }
        let got: Vec<u64> = c
            .rx_batches
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // <=1, <=2, <=4 (3, 4), <=8 (5), <=16, <=32, <=64 (33, 64, 64, and 200 capped)
        assert_eq!(got, vec![1, 1, 2, 1, 0, 1, 4]);
    }

    #[test]
    fn a_reader_never_sees_the_frames_of_two_turns_mixed() {
        let cells = std::sync::Arc::new(FrameCells::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (cells, stop) = (cells.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Always balanced; every value changes from one store to the next.
                    let kernel = i % 2048;
                    let in_flight = i % 64;
                    cells.store(FrameAccount {
                        total: 4096,
                        free: 4096 - kernel - in_flight,
                        kernel,
                        in_flight,
                    });
                    i = i.wrapping_add(1);
                }
            })
        };
        for _ in 0..200_000 {
            let a = cells.load();
            assert!(a.total == 0 || a.balanced(), "{a:?}");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
