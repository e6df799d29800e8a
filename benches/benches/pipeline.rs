//! The whole pipeline in memory: ns per packet for established and new flows, DR, NAT and
//! TUN, with 1, 10k, 1M and 10M flows in the table; 1 and 2 workers.
//!
//! Frames come from xvs-pktgen's patterns and go through `Pipeline::process` exactly as a
//! worker runs it (parse, classify, look up or schedule and insert, TCP state, rewrite,
//! counters), one 64-byte frame at a time in a reused buffer; the figure includes writing the
//! frame from its template (a 60-byte copy and a few adds, about 12-14 ns: see
//! `xvs-pktgen memory --generate-only`).
//!
//! - **established/N**: N connections opened (SYN, then one ACK each) before timing; timed
//!   packets are ACKs, every flow once per round in a scrambled order.
//! - **new/N**: the same N established connections sit in the table; timed packets are SYNs
//!   from fresh client ports, each creating a connection. The table has room for `NEW_ROOM`
//!   more per worker; when a timed chunk would overflow it, time stops, the clock moves 61 s
//!   (past SYN_RECV's 60 s) and housekeeping expires the new connections, and every 13 such
//!   moves the N established ones are refreshed (their 900 s timer), also untimed.
//! - **2 workers**: two threads, each with its own pipeline, shard and flows (as RSS keeps a
//!   flow on one queue), over one table; the figure is wall time per packet of both together.
//!
//! 10M flows take about 1.1 GB of table and some seconds to open per method; sizes are built
//! once per benchmark group and dropped before the next.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xvs_pktgen::memory::{Director, Method};
use xvs_pktgen::pattern::{FlowSpace, FrameSize, Mode, Pattern};

/// New connections a worker's shard has room for beyond the established ones.
const NEW_ROOM: u64 = 1 << 20;
/// Clock moves between refreshes of the established flows (13 × 61 s < 900 s).
const MOVES_PER_REFRESH: u32 = 13;

const SIZES: [(u64, &str); 4] = [
    (1, "1"),
    (10_000, "10k"),
    (1_000_000, "1M"),
    (10_000_000, "10M"),
];

/// A director with `flows` established connections per worker and new-flow patterns ready.
struct Fixture {
    director: Director,
    established: Vec<Pattern>,
    new: Vec<Pattern>,
    /// New connections created since the last expiry, per worker.
    created: Vec<u64>,
    moves: u32,
}

impl Fixture {
    fn new(method: Method, workers: usize, flows_per_worker: u64) -> Fixture {
        let capacity = workers as u64 * (flows_per_worker + NEW_ROOM + 1024);
        let mut director = Director::new(method, workers, capacity as usize);
        let addressing = director.addressing();
        let mut established = Vec::new();
        let mut new = Vec::new();
        for w in 0..workers {
            let space = FlowSpace::from(Director::client_base(w), 4096);
            let mut p = Pattern::new(
                Mode::Established,
                flows_per_worker,
                space,
                FrameSize::Fixed(64),
                &addressing,
            );
            let opened = director.workers()[w].open(&mut p);
            assert_eq!(opened.dropped, 0, "every flow opens");
            established.push(p);
            // Fresh clients: 11.0.0.0/8 and up, never used by the established flows.
            let fresh = FlowSpace::from([11 + w as u8, 0, 0, 0].into(), 1 << 16);
            new.push(Pattern::new(
                Mode::New,
                0,
                fresh,
                FrameSize::Fixed(64),
                &addressing,
            ));
        }
        Fixture {
            director,
            established,
            new,
            created: vec![0; workers],
            moves: 0,
        }
    }

    /// Empties the new connections (untimed): clock past SYN_RECV, housekeeping, and now and
    /// then a refresh of the established flows.
    fn make_room(&mut self) {
        self.director.advance(61);
        self.created.fill(0);
        self.moves += 1;
        if self.moves >= MOVES_PER_REFRESH {
            self.moves = 0;
            for (worker, pattern) in self
                .director
                .workers()
                .iter_mut()
                .zip(&mut self.established)
            {
                let flows = pattern.flows();
                pattern.rewind();
                worker.send(pattern, flows);
            }
        }
    }

    /// Times `iters` packets of `mode`, shared among the workers (all at once); elapsed.
    fn run(&mut self, mode: Mode, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters.div_ceil(self.created.len() as u64);
        while left > 0 {
            let chunk = match mode {
                Mode::New => {
                    let room = NEW_ROOM - self.created.iter().max().copied().unwrap_or(0);
                    if room == 0 {
                        self.make_room();
                        continue;
                    }
                    left.min(room)
                }
                _ => left,
            };
            total += self.timed(mode, chunk);
            if mode == Mode::New {
                self.created.iter_mut().for_each(|c| *c += chunk);
            }
            left -= chunk;
        }
        total
    }

    fn timed(&mut self, mode: Mode, packets: u64) -> Duration {
        let patterns = match mode {
            Mode::New => &mut self.new,
            _ => &mut self.established,
        };
        let workers = self.director.workers();
        if workers.len() == 1 {
            let started = Instant::now();
            let tally = workers[0].send(&mut patterns[0], packets);
            let elapsed = started.elapsed();
            assert_eq!(tally.dropped, 0, "nothing is dropped");
            return black_box(elapsed);
        }
        let barrier = Barrier::new(workers.len() + 1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(patterns.iter_mut())
                .map(|(worker, pattern)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        worker.send(pattern, packets)
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            for h in handles {
                let tally = h.join().expect("a worker thread finished");
                assert_eq!(tally.dropped, 0, "nothing is dropped");
            }
            started.elapsed()
        })
    }
}

/// Benchmarks established and new flows on one fixture, built only if a benchmark of it runs
/// (filters skip the 10M builds).
fn bench_fixture(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    build: impl Fn() -> Fixture,
) {
    let mut fixture: Option<Fixture> = None;
    for mode in [Mode::Established, Mode::New] {
        group.bench_function(BenchmarkId::new(mode.to_string(), label), |b| {
            let fixture = fixture.get_or_insert_with(&build);
            b.iter_custom(|iters| fixture.run(mode, iters))
        });
    }
}

fn one_worker(c: &mut Criterion) {
    for method in [Method::Dr, Method::Nat, Method::Tun] {
        let mut group = c.benchmark_group(format!("pipeline/{}", method.name()));
        group.throughput(Throughput::Elements(1));
        for (flows, label) in SIZES {
            bench_fixture(&mut group, label, || Fixture::new(method, 1, flows));
        }
        group.finish();
    }
}

fn two_workers(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline-2-workers/dr");
    group.throughput(Throughput::Elements(1));
    for (flows, label) in [(10_000, "10k"), (1_000_000, "1M")] {
        bench_fixture(&mut group, label, || Fixture::new(Method::Dr, 2, flows / 2));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = one_worker, two_workers
}
criterion_main!(benches);
