//! The worker loop: one thread per queue, pinned to a core, turning batches round.
//!
//! Each turn reads, in the order the data path runs:
//! pick up a new service table or neighbour table if one was published -> set the clock ->
//! install what the sync backup received -> `poll` the ports (RX batch -> pipeline -> TX batch)
//! -> publish where the frames are -> every few milliseconds expire connections -> if idle for
//! a while, sleep in the kernel until frames arrive.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::packet_io::{BATCH_SIZE, PacketIo};
use crate::pipeline::counters::WorkerCounters;
use xvs_forwarders::Frame;

use crate::packet_io::Verdict;
use crate::pipeline::{Clock, Pipeline};
use crate::publish::Subscriber;
use crate::route::Neighbours;
use crate::service::snapshot::Snapshot;

/// Empty polls in a row before the worker sleeps in `wait`.
const SPIN_BEFORE_SLEEP: u32 = 256;
/// How long an idle worker sleeps at most, so it still notices a stop or a reload.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// How often connections are expired and scheduler caches aged.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(20);

/// What the worker loop drives: the real [`Pipeline`] or the
/// [`crate::ceiling::IoCeiling`].
pub trait Stage {
    /// Switches to a new service table.
    fn set_snapshot(&mut self, snapshot: Arc<Snapshot>);
    /// Switches to new neighbours.
    fn set_neighbours(&mut self, neighbours: Arc<Neighbours>);
    /// Sets the time for the next batch.
    fn set_clock(&mut self, clock: Clock);
    /// Installs what the sync backup received.
    fn install_synced(&mut self);
    /// Processes a received batch in place, `verdicts[i]` for `frames[i]`.
    fn process_batch(&mut self, frames: &mut [Frame<'_>], ingress: u8, verdicts: &mut [Verdict]);
    /// The worker's counters.
    fn counters(&self) -> &WorkerCounters;
    /// Expiry and cache ageing, every few milliseconds.
    fn housekeeping(&mut self);
}

impl Stage for Pipeline {
    fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        Pipeline::set_snapshot(self, snapshot);
    }
    fn set_neighbours(&mut self, neighbours: Arc<Neighbours>) {
        Pipeline::set_neighbours(self, neighbours);
    }
    fn set_clock(&mut self, clock: Clock) {
        Pipeline::set_clock(self, clock);
    }
    fn install_synced(&mut self) {
        Pipeline::install_synced(self);
    }
    #[inline]
    fn process_batch(&mut self, frames: &mut [Frame<'_>], ingress: u8, verdicts: &mut [Verdict]) {
        Pipeline::process_batch(self, frames, ingress, verdicts);
    }
    fn counters(&self) -> &WorkerCounters {
        Pipeline::counters(self)
    }
    fn housekeeping(&mut self) {
        Pipeline::housekeeping(self);
    }
}

/// What a worker follows besides its ports.
pub struct WorkerInputs {
    /// New service tables.
    pub snapshot: Subscriber<Snapshot>,
    /// New neighbour tables.
    pub neighbours: Subscriber<Neighbours>,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// The director's clock origin (connection timers count seconds from it).
    pub epoch: Instant,
}

/// Runs the worker until `inputs.stop` is set or the ports fail.
pub fn run<P: PacketIo, S: Stage>(
    io: &mut P,
    pipeline: &mut S,
    mut inputs: WorkerInputs,
) -> io::Result<()> {
    let mut idle_turns = 0u32;
    let mut last_housekeeping = Instant::now();
    while !inputs.stop.load(Ordering::Relaxed) {
        if let Some(snapshot) = inputs.snapshot.changed() {
            pipeline.set_snapshot(snapshot);
        }
        if let Some(neighbours) = inputs.neighbours.changed() {
            pipeline.set_neighbours(neighbours);
        }
        let now = Instant::now();
        pipeline.set_clock(clock(inputs.epoch, now));
        pipeline.install_synced();
        let summary = io.poll(BATCH_SIZE, &mut |ingress, frames, verdicts| {
            pipeline.process_batch(frames, ingress, verdicts);
        })?;
        if summary.received > 0 {
            pipeline.counters().count_batch(summary.received);
            pipeline.counters().umem.store(io.frames());
        }
        if now.duration_since(last_housekeeping) >= HOUSEKEEPING_EVERY {
            pipeline.housekeeping();
            publish_port_losses(io, pipeline.counters());
            // An idle worker's frames move too (completions come back, fill rings refill).
            pipeline.counters().umem.store(io.frames());
            last_housekeeping = now;
        }
        if summary.received == 0 {
            idle_turns += 1;
            if idle_turns >= SPIN_BEFORE_SLEEP {
                io.wait(IDLE_WAIT)?;
            }
        } else {
            idle_turns = 0;
        }
    }
    Ok(())
}

/// Copies the ports' own loss counters where the side thread can read them.
fn publish_port_losses<P: PacketIo>(io: &P, counters: &WorkerCounters) {
    for (port, cells) in counters.ports.iter().enumerate().take(io.port_count()) {
        let stats = io.stats(port);
        cells
            .rx_ring_full
            .store(io.rx_ring_full(port), Ordering::Relaxed);
        cells
            .tx_ring_full
            .store(stats.tx_ring_full, Ordering::Relaxed);
        cells
            .bad_verdict
            .store(stats.bad_verdict, Ordering::Relaxed);
        cells
            .invalid_descs
            .store(stats.invalid_descs, Ordering::Relaxed);
    }
}

/// Seconds and milliseconds since `epoch` (seconds start at 1 so 0 never means "now").
fn clock(epoch: Instant, now: Instant) -> Clock {
    let elapsed = now.duration_since(epoch);
    Clock {
        secs: elapsed.as_secs() as u32 + 1,
        millis: elapsed.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_port::MemoryPorts;
    use crate::packet_io::Verdict;
    use crate::umem::UmemConfig;

    #[test]
    fn port_losses_reach_the_workers_counters() {
        let config = UmemConfig {
            frame_count: 64,
            ..UmemConfig::default()
        };
        let mut ports = MemoryPorts::with_tx_ring(1, config, 2).unwrap();
        for _ in 0..5 {
            assert!(ports.push_rx(0, &[0u8; 60]));
        }
        ports
            .poll(BATCH_SIZE, &mut |_, _, verdicts| {
                verdicts.fill(Verdict::Transmit { port: 0 })
            })
            .unwrap();
        let counters = WorkerCounters::default();
        publish_port_losses(&ports, &counters);
        let full = counters.ports[0].tx_ring_full.load(Ordering::Relaxed);
        assert_eq!(full, ports.stats(0).tx_ring_full);
        assert_eq!(full, 3, "a ring of 2 takes 2 of 5 frames");
    }

    /// A stage that forwards every frame back out of port 0 and stops the loop after a few
    /// turns, so `run` publishes what its frames are doing.
    struct Reflect {
        counters: WorkerCounters,
        stop: Arc<AtomicBool>,
        batches: u32,
    }

    impl Stage for Reflect {
        fn set_snapshot(&mut self, _: Arc<Snapshot>) {}
        fn set_neighbours(&mut self, _: Arc<Neighbours>) {}
        fn set_clock(&mut self, _: Clock) {}
        fn install_synced(&mut self) {}
        fn process_batch(&mut self, _: &mut [Frame<'_>], _: u8, verdicts: &mut [Verdict]) {
            verdicts.fill(Verdict::Transmit { port: 0 });
            self.batches += 1;
            self.stop.store(true, Ordering::Relaxed);
        }
        fn counters(&self) -> &WorkerCounters {
            &self.counters
        }
        fn housekeeping(&mut self) {}
    }

    #[test]
    fn the_worker_publishes_where_its_frames_are() {
        use crate::publish::Published;
        let config = UmemConfig {
            frame_count: 64,
            ..UmemConfig::default()
        };
        let mut ports = MemoryPorts::new(1, config).unwrap();
        for _ in 0..10 {
            assert!(ports.push_rx(0, &[0u8; 60]));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut stage = Reflect {
            counters: WorkerCounters::default(),
            stop: stop.clone(),
            batches: 0,
        };
        let snapshot = Arc::new(Published::new(Arc::new(
            crate::service::snapshot::SnapshotBuilder::new()
                .build(&Default::default())
                .unwrap(),
        )));
        let neighbours = Arc::new(Published::new(Arc::new(Neighbours::default())));
        let inputs = WorkerInputs {
            snapshot: snapshot.subscribe(),
            neighbours: neighbours.subscribe(),
            stop,
            epoch: Instant::now(),
        };
        run(&mut ports, &mut stage, inputs).unwrap();
        assert_eq!(stage.batches, 1);
        let published = stage.counters.umem.load();
        assert_eq!(published, ports.frames());
        assert!(published.balanced(), "{published:?}");
        assert_eq!(
            (
                published.total,
                published.free,
                published.kernel,
                published.in_flight
            ),
            (64, 54, 10, 0),
            "the 10 reflected frames wait on the transmit queue"
        );
        assert_eq!(ports.drain_tx(0, |_| {}), 10);
        assert_eq!(ports.frames().free, 64);
    }
}
