//! The frame I/O a worker drives: receive a batch, let the pipeline decide, transmit the batch.
//!
//! A [`PacketIo`] owns the ports of one worker: one per director interface (port 0 is the
//! external or only interface, port 1 the internal one of a two-arm director), all on the
//! worker's queue and all cut from one frame memory ([`crate::umem::Umem`]). Because the
//! memory is shared, a frame received on one port and sent on another moves by descriptor,
//! never by copy. Two implementations share that shape and the same batch code:
//! [`crate::afxdp::AfXdpPorts`] (the real thing) and [`crate::memory_port::MemoryPorts`]
//! (tests and benchmarks push frames in and read transmitted frames out).
//!
//! One `poll` is one turn of the worker loop:
//!
//! ```text
//! recycle completions -> refill fill rings -> per port: RX batch -> process -> TX/free
//!                     -> kick TX where the kernel asks for it (need_wakeup)
//! ```

use std::io;
use std::time::Duration;

use xvs_forwarders::Frame;

/// Most frames handed to `process` at once.
pub const BATCH_SIZE: usize = 64;

/// What to do with a processed frame. `process` finds every verdict set to `Drop` and sets
/// the ones to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of port `port` (an index into the worker's ports).
    Transmit {
        /// Egress port index.
        port: u8,
    },
    /// Drop the frame; its memory is reused.
    Drop,
}

/// Counters of one port, kept by the worker that owns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames queued for transmission.
    pub tx_packets: u64,
    /// Bytes queued for transmission.
    pub tx_bytes: u64,
    /// Frames dropped by verdict.
    pub dropped: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_ring_full: u64,
    /// Frames whose verdict named a port that does not exist, or that ended up empty.
    pub bad_verdict: u64,
    /// Descriptors the kernel returned that xvs did not hand it (counted, ignored).
    pub invalid_descs: u64,
    /// System calls made to wake the kernel (TX kicks and fill-ring wakeups).
    pub wakeups: u64,
}

/// What one `poll` did, summed over the ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollSummary {
    /// Frames received and processed.
    pub received: usize,
    /// Frames queued for transmission.
    pub transmitted: usize,
}

/// Where a worker's frames are, read from its free list and its rings (see
/// [`PacketIo::frames`]): every chunk of the frame memory is in exactly one of the three
/// places, so `free + kernel + in_flight == total` unless a frame leaked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameAccount {
    /// Chunks of the frame memory.
    pub total: u32,
    /// Chunks in the worker's free list.
    pub free: u32,
    /// Chunks the kernel holds: given to a fill ring and not received yet, or queued for
    /// transmission and not completed yet.
    pub kernel: u32,
    /// Chunks the worker holds in a batch (received, not yet transmitted or freed).
    pub in_flight: u32,
}

impl FrameAccount {
    /// Whether every chunk is accounted for (no frame leaked, none counted twice).
    pub fn balanced(&self) -> bool {
        u64::from(self.free) + u64::from(self.kernel) + u64::from(self.in_flight)
            == u64::from(self.total)
    }
}

/// The processing callback: `(ingress port, frames, verdicts)`, both slices of equal length.
pub type ProcessFn<'p> = dyn FnMut(u8, &mut [Frame<'_>], &mut [Verdict]) + 'p;

/// A worker's ports. See the module documentation.
pub trait PacketIo {
    /// How many ports there are; valid port indexes are `0..port_count()`.
    fn port_count(&self) -> usize;

    /// One turn: receives up to `budget` frames per port (at most [`BATCH_SIZE`] at a time),
    /// hands each batch to `process`, and transmits or frees every frame as its verdict says.
    fn poll(&mut self, budget: usize, process: &mut ProcessFn<'_>) -> io::Result<PollSummary>;

    /// Sleeps until a port may have frames to receive, or `timeout` passes. For an idle
    /// worker only: a busy worker calls `poll` again instead (a system call per empty poll
    /// would cost more than the frames).
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// Counters of port `port` (zeros for a port that does not exist).
    fn stats(&self, port: usize) -> PortStats;

    /// Frames the kernel could not hand port `port`'s worker because its RX ring was full
    /// or it had no free frame: the worker fell behind. A system call for AF_XDP, so read
    /// every few milliseconds, not every turn; 0 where nothing is lost before the ring.
    fn rx_ring_full(&self, _port: usize) -> u64 {
        0
    }

    /// Where the frames are now: the free list's length, what the rings hold by their own
    /// counts, and what a batch holds. Cheap (no walk over the frames), so a worker can
    /// publish it every turn.
    fn frames(&self) -> FrameAccount;
}

/// The frames of one batch bound for one port.
pub(crate) type TxList = arrayvec::ArrayVec<crate::umem::Desc, BATCH_SIZE>;

/// The shared middle of every port's `poll`: counts a received batch on its ingress port,
/// hands it to `process`, and sorts the frames by verdict into `tx_lists`.
pub(crate) fn process_received(
    umem: &mut crate::umem::Umem,
    descs: &mut [crate::umem::Desc],
    ingress: usize,
    stats: &mut PortStats,
    tx_lists: &mut [TxList],
    process: &mut ProcessFn<'_>,
) {
    let n = descs.len();
    stats.rx_packets += n as u64;
    stats.rx_bytes += descs.iter().map(|d| u64::from(d.len)).sum::<u64>();
    let mut verdicts = [Verdict::Drop; BATCH_SIZE];
    let port = ingress as u8;
    umem.process_batch(descs, &mut verdicts[..n], &mut |f, v| process(port, f, v));
    sort_verdicts(umem, descs, &verdicts[..n], tx_lists, stats);
}

/// Sorts a processed batch by verdict: frames to send go to their port's list (still in the
/// `Batch` state; the caller moves them to a ring), the rest are freed and counted on the
/// ingress port.
pub(crate) fn sort_verdicts(
    umem: &mut crate::umem::Umem,
    descs: &[crate::umem::Desc],
    verdicts: &[Verdict],
    tx_lists: &mut [TxList],
    ingress: &mut PortStats,
) {
    for (desc, verdict) in descs.iter().zip(verdicts) {
        match *verdict {
            Verdict::Transmit { port } => match tx_lists.get_mut(usize::from(port)) {
                Some(list) if desc.len > 0 && !list.is_full() => list.push(*desc),
                _ => {
                    ingress.bad_verdict += 1;
                    umem.release(desc.addr);
                }
            },
            Verdict::Drop => {
                ingress.dropped += 1;
                umem.release(desc.addr);
            }
        }
    }
}
