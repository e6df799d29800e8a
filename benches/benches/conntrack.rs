//! Connection table: lookup hit and miss (inbound on the owner, outbound from any worker),
//! insert and expiry at 1k, 1M and 10M entries, and outbound lookups from 1 and 2 threads.
//!
//! Each size builds one table (2 shards, NAT flows in ESTABLISHED, spread over both shards)
//! and runs every benchmark on it; insert and expiry put the table back to its size after each
//! timed chunk. Keys are visited in a pseudo-random order, so at 1M and 10M entries most
//! lookups miss the CPU caches, as real traffic would.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xvs_conntrack::*;

const SHARDS: usize = 2;
/// Flows inserted (or expired) per timed chunk; the table has this much headroom per shard.
const CHUNK: usize = 32 * 1024;

fn vip() -> Endpoint {
    Endpoint::new([192, 0, 2, 1], 80)
}

fn real_server(i: u64) -> Endpoint {
    Endpoint::new([10, 1, 0, (i % 16) as u8], 8080)
}

/// The i-th client: 65536 ports per address, addresses from 10.0.0.0 up; clients of
/// `space` 1 and up are never inserted (misses) or used by insert/expiry chunks.
fn client(space: u32, i: u64) -> Endpoint {
    let addr = (space << 28) | 0x0a00_0000 | (i >> 16) as u32;
    Endpoint::new(Addr::v4(addr.to_be_bytes()), i as u16)
}

fn new_conn(space: u32, i: u64) -> NewConn {
    NewConn {
        key: FlowKey::tcp(client(space, i), vip()),
        dest: DestId((i % 16) as u32),
        dest_addr: real_server(i),
        return_path: ReturnPath::ViaDirector,
        template: None,
    }
}

struct Rng(u64);

impl Rng {
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Fixture {
    size: u64,
    table: ConnTable,
    shards: Vec<Shard>,
    now: Secs,
    next_fresh: u64,
}

fn build(size: u64) -> Fixture {
    let (table, mut shards) = ConnTable::new(Config::new(SHARDS, size as usize + SHARDS * CHUNK));
    // Long-lived flows: beyond the wheel's span, so advancing the clock in the expiry
    // benchmark never expires them (they are re-filed once per wheel turn, which the expiry
    // figure includes).
    table.timeouts().set(SetTimeouts {
        tcp: 100_000_000,
        tcpfin: 0,
        udp: 1,
    });
    let mut c = NoCounters;
    for i in 0..size {
        let shard = &mut shards[(i % SHARDS as u64) as usize];
        let conn = shard.insert(new_conn(0, i), 0, &mut c).unwrap();
        for flags in [TcpFlags::SYN, TcpFlags::ACK] {
            shard
                .on_packet(conn.flow, Direction::Input, flags, 0, &mut c)
                .unwrap();
        }
    }
    Fixture {
        size,
        table,
        shards,
        now: 0,
        next_fresh: 0,
    }
}

fn lookups(c: &mut Criterion, f: &mut Fixture) {
    let size = f.size;
    let mut g = c.benchmark_group(format!("conntrack/{size}"));
    g.throughput(Throughput::Elements(1));
    if size >= 1_000_000 {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
    } else {
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
    }

    // Inbound, on the owner of shard 0 (flows 0, 2, 4, ...).
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let owned = size.div_ceil(SHARDS as u64);
    g.bench_function("inbound_hit", |b| {
        let shard = &mut f.shards[0];
        b.iter(|| {
            let i = rng.below(owned) * SHARDS as u64;
            let key = FlowKey::tcp(client(0, i), vip());
            black_box(shard.lookup_inbound(black_box(&key), &AllAvailable, &mut NoCounters))
        })
    });
    g.bench_function("inbound_miss", |b| {
        let shard = &mut f.shards[0];
        b.iter(|| {
            let key = FlowKey::tcp(client(1, rng.below(size)), vip());
            black_box(shard.lookup_inbound(black_box(&key), &AllAvailable, &mut NoCounters))
        })
    });
    // Outbound: NAT replies, any shard, as a non-owner would do it.
    g.bench_function("outbound_hit", |b| {
        b.iter(|| {
            let i = rng.below(size);
            let key = FlowKey::tcp(real_server(i), client(0, i));
            black_box(f.table.lookup_outbound(black_box(&key)))
        })
    });
    g.bench_function("outbound_miss", |b| {
        b.iter(|| {
            let i = rng.below(size);
            let key = FlowKey::tcp(real_server(i), client(1, i));
            black_box(f.table.lookup_outbound(black_box(&key)))
        })
    });
    // Batches of 32 as a worker's rx burst would bring them; time per key.
    const BURST: usize = 32;
    g.bench_function("inbound_hit_batch32", |b| {
        let shard = &mut f.shards[0];
        let mut keys = [FlowKey::tcp(client(0, 0), vip()); BURST];
        let mut out = [Inbound::Miss; BURST];
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters.div_ceil(BURST as u64) {
                for k in keys.iter_mut() {
                    *k = FlowKey::tcp(client(0, rng.below(owned) * SHARDS as u64), vip());
                }
                let start = Instant::now();
                shard.lookup_inbound_batch(&keys, &AllAvailable, &mut NoCounters, &mut out);
                elapsed += start.elapsed();
                black_box(&out);
            }
            elapsed.mul_f64(iters as f64 / (iters.div_ceil(BURST as u64) * BURST as u64) as f64)
        })
    });
    g.bench_function("outbound_hit_batch32", |b| {
        let mut keys = [FlowKey::tcp(real_server(0), client(0, 0)); BURST];
        let mut out = [None; BURST];
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters.div_ceil(BURST as u64) {
                for k in keys.iter_mut() {
                    let i = rng.below(size);
                    *k = FlowKey::tcp(real_server(i), client(0, i));
                }
                let start = Instant::now();
                f.table.lookup_outbound_batch(&keys, &mut out);
                elapsed += start.elapsed();
                black_box(&out);
            }
            elapsed.mul_f64(iters as f64 / (iters.div_ceil(BURST as u64) * BURST as u64) as f64)
        })
    });
    // A packet of an established flow: lookup plus state update and timer refresh.
    g.bench_function("inbound_hit_and_update", |b| {
        let shard = &mut f.shards[0];
        b.iter(|| {
            let i = rng.below(owned) * SHARDS as u64;
            let key = FlowKey::tcp(client(0, i), vip());
            if let Inbound::Hit(conn) = shard.lookup_inbound(&key, &AllAvailable, &mut NoCounters) {
                black_box(shard.on_packet(
                    conn.flow,
                    Direction::Input,
                    TcpFlags::ACK,
                    0,
                    &mut NoCounters,
                ))
                .ok();
            }
        })
    });

    // Insert CHUNK fresh flows (timed), then remove them (untimed): the table stays at
    // `size` plus at most one chunk.
    g.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            let mut flows = Vec::with_capacity(CHUNK);
            while left > 0 {
                let n = left.min(CHUNK as u64);
                let shard = &mut f.shards[0];
                let start = Instant::now();
                for _ in 0..n {
                    f.next_fresh += 1;
                    let conn = shard
                        .insert(new_conn(2, f.next_fresh), f.now, &mut NoCounters)
                        .unwrap();
                    flows.push(conn.flow);
                }
                elapsed += start.elapsed();
                for flow in flows.drain(..) {
                    shard.remove(flow, &mut NoCounters);
                }
                left -= n;
            }
            elapsed
        })
    });

    // Expiry: CHUNK UDP flows with a 1 s timeout are created (untimed), the clock moves one
    // second and `expire` removes them (timed), per expired entry.
    g.bench_function("expire", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK as u64);
                let shard = &mut f.shards[0];
                for _ in 0..n {
                    f.next_fresh += 1;
                    let conn = shard
                        .insert(
                            NewConn {
                                key: FlowKey::udp(client(3, f.next_fresh), vip()),
                                ..new_conn(3, f.next_fresh)
                            },
                            f.now,
                            &mut NoCounters,
                        )
                        .unwrap();
                    shard
                        .on_packet(
                            conn.flow,
                            Direction::Input,
                            TcpFlags::NONE,
                            f.now,
                            &mut NoCounters,
                        )
                        .unwrap();
                }
                f.now += 1;
                let start = Instant::now();
                let removed = shard.expire(f.now, &mut NoCounters);
                elapsed += start.elapsed();
                assert!(removed as u64 >= n);
                left -= n;
            }
            elapsed
        })
    });
    g.finish();
}

/// CPU time consumed by the calling thread (immune to the thread being descheduled, which a
/// shared 2-core machine does a lot).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which lives on our stack;
    // CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Outbound lookups from 1 and 2 threads at once on the same table: with lock-free reads the
/// time per lookup per thread should not grow with the second thread. `wall` is the elapsed
/// time for every thread to finish `iters` lookups; `cpu` is the largest per-thread CPU time
/// (what each lookup costs a worker, whoever else shares the machine).
fn threads(c: &mut Criterion, f: &Fixture) {
    for clock in ["wall", "cpu"] {
        let mut g = c.benchmark_group(format!("conntrack/{}/outbound_threads_{clock}", f.size));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        g.throughput(Throughput::Elements(1));
        for threads in [1usize, 2] {
            g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let cpu = std::thread::scope(|s| {
                        let workers: Vec<_> = (0..t)
                            .map(|id| {
                                let table = &f.table;
                                let size = f.size;
                                s.spawn(move || {
                                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
                                    let cpu_start = thread_cpu_time();
                                    for _ in 0..iters {
                                        let i = rng.below(size);
                                        let key = FlowKey::tcp(real_server(i), client(0, i));
                                        black_box(table.lookup_outbound(&key));
                                    }
                                    thread_cpu_time() - cpu_start
                                })
                            })
                            .collect();
                        workers
                            .into_iter()
                            .map(|w| w.join().unwrap())
                            .max()
                            .unwrap()
                    });
                    if clock == "wall" {
                        start.elapsed()
                    } else {
                        cpu
                    }
                })
            });
        }
        g.finish();
    }
}

fn conntrack(c: &mut Criterion) {
    for size in [1_000u64, 1_000_000, 10_000_000] {
        let mut f = build(size);
        lookups(c, &mut f);
        threads(c, &f);
    }
}

criterion_group!(benches, conntrack);
criterion_main!(benches);
