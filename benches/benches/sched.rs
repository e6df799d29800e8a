//! Scheduler pick cost at 2, 64 and 1024 real servers, and the Maglev table build.
//!
//! Servers have mixed weights (1..=10) and mixed loads, so the least-connection family
//! compares real numbers; picks are not bound, so every iteration sees the same state and
//! measures the pick alone. Requests cycle through 4096 clients and 1024 destinations, so
//! lblc/lblcr measure cache hits and the hashing schedulers touch many table slots.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use xvs_sched::schedulers::mh::MaglevHashing;
use xvs_sched::{
    ConnKind, RealServer, Request, SCHEDULER_NAMES, SchedFlags, SchedOptions, Scheduler,
    new_scheduler,
};

fn servers(n: usize) -> Vec<RealServer> {
    (0..n)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i as u32 + 1));
            let server = RealServer::new(addr, 80, 1 + (i as u32 * 7) % 10);
            for _ in 0..(i * 13) % 50 {
                server.bind(ConnKind::Active);
            }
            for _ in 0..(i * 29) % 200 {
                server.bind(ConnKind::Inactive);
            }
            server
        })
        .collect()
}

fn requests() -> Vec<Request> {
    (0..4096u32)
        .map(|k| Request {
            src: IpAddr::V4(Ipv4Addr::from(
                0xC000_0000u32.wrapping_add(k.wrapping_mul(2_654_435_761)),
            )),
            src_port: 1024 + k as u16,
            dst: IpAddr::V4(Ipv4Addr::from(0xCB00_7100 + (k % 1024))),
            dst_port: 80,
            now_ms: 1,
        })
        .collect()
}

fn pick_cost(c: &mut Criterion) {
    let requests = requests();
    let mut group = c.benchmark_group("sched_pick");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [2usize, 64, 1024] {
        let list = servers(n);
        for name in SCHEDULER_NAMES {
            let options = SchedOptions {
                flags: SchedFlags::default(),
                ..Default::default()
            };
            let mut scheduler = new_scheduler(name, &options, &list).unwrap();
            // Fill lblc/lblcr caches so the measured picks are the steady state.
            for r in &requests {
                scheduler.pick(&list, r);
            }
            let mut k = 0usize;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    k = (k + 1) & 4095;
                    black_box(scheduler.pick(&list, black_box(&requests[k])))
                })
            });
        }
    }
    group.finish();
}

fn mh_build(c: &mut Criterion) {
    let list = servers(1000);
    let mut group = c.benchmark_group("mh_build");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("M=65537,servers=1000", |b| {
        let mut mh = MaglevHashing::new(SchedFlags::default(), 65537);
        b.iter(|| mh.update(black_box(&list)))
    });
    group.finish();
}

criterion_group!(benches, pick_cost, mh_build);
criterion_main!(benches);
