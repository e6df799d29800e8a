//! `-S` output is accepted by `-R` and rebuilds the same table: random tables (a seeded
//! generator, so a failure repeats) of every scheduler, family, method and option.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_cli::director::{Director, Edit, ListRequest, TableOnlyDirector};
use xvs_cli::ipvsadm;
use xvs_cli::listing::{self, ListFormat};
use xvs_cli::names::Names;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr, ServiceSpec,
};
use xvs_sched::{SCHEDULER_NAMES, SchedFlags};

/// xorshift64*: small, seeded, good enough to spread the cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn addr(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            rng.below(4) as u16,
            rng.below(200) as u16 + 1,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            10,
            rng.below(3) as u8,
            rng.below(3) as u8,
            rng.below(250) as u8 + 1,
        ))
    }
}

fn random_service(rng: &mut Rng) -> ServiceSpec {
    let v6 = rng.chance(30);
    let addr = if rng.chance(20) {
        ServiceAddr::Fwmark {
            mark: rng.below(1000) as u32 + 1,
            ipv6: v6,
        }
    } else {
        ServiceAddr::Inet {
            protocol: if rng.chance(50) {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            addr: addr(rng, v6),
            port: [80, 443, 53, 0][rng.below(4) as usize],
        }
    };
    let mut s = ServiceSpec::new(addr);
    s.scheduler = SCHEDULER_NAMES[rng.below(SCHEDULER_NAMES.len() as u64) as usize].to_string();
    s.flags = SchedFlags {
        fallback: rng.chance(30),
        port: rng.chance(30),
        flag3: rng.chance(10),
    };
    let port_zero = matches!(addr, ServiceAddr::Inet { port: 0, .. });
    if port_zero || rng.chance(40) {
        let max = if v6 { 128 } else { 32 };
        s.persistence = Some(PersistenceSpec {
            timeout_secs: [1, 60, 300, 3600, 86_400 * 31][rng.below(5) as usize],
            prefix_len: if rng.chance(50) {
                max
            } else {
                rng.below(max as u64) as u8 + 1
            },
        });
    }
    let udp_or_mark = !matches!(
        addr,
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            ..
        }
    );
    s.one_packet = udp_or_mark && rng.chance(30);
    s
}

fn random_dest(rng: &mut Rng, s: &ServiceSpec) -> DestSpec {
    let method = [
        ForwardMethod::Route,
        ForwardMethod::Tunnel,
        ForwardMethod::Masq,
    ][rng.below(3) as usize];
    let vport = match s.addr {
        ServiceAddr::Inet { port, .. } => Some(port),
        ServiceAddr::Fwmark { .. } => None,
    };
    let port = match (vport, method) {
        (Some(p), ForwardMethod::Route | ForwardMethod::Tunnel) => p,
        _ => [80, 8080, 0][rng.below(3) as usize],
    };
    let upper = if rng.chance(30) {
        rng.below(65_536) as u32
    } else {
        0
    };
    let lower = if upper > 0 && rng.chance(50) {
        rng.below(u64::from(upper) + 1) as u32
    } else {
        0
    };
    DestSpec {
        addr: addr(rng, s.is_ipv6()),
        port,
        method,
        weight: [0, 1, 2, 100, 65_535][rng.below(5) as usize],
        upper_threshold: upper,
        lower_threshold: lower,
    }
}

#[test]
fn saved_tables_restore_to_the_same_table() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut checked_dests = 0;
    for _ in 0..300 {
        let mut d = TableOnlyDirector::default();
        for _ in 0..rng.below(5) + 1 {
            let s = random_service(&mut rng);
            let addr = s.addr;
            if d.apply(Edit::AddService { service: s.clone() }).is_err() {
                continue; // a refused combination (sh flags on rr, a duplicate...)
            }
            for _ in 0..rng.below(5) {
                let dest = random_dest(&mut rng, &s);
                if d.apply(Edit::AddDest {
                    service: addr,
                    dest,
                })
                .is_ok()
                {
                    checked_dests += 1;
                }
            }
        }
        let data = d.list(&ListRequest::Services).unwrap();
        let saved = listing::render_save(&data, true, &Names::none());
        let restore = ipvsadm::parse_restore(&saved, "xvsadm", &Names::none())
            .unwrap_or_else(|e| panic!("{e}\n{saved}"));
        let mut again = TableOnlyDirector::default();
        again
            .apply_batch(&restore.edits)
            .unwrap_or_else(|e| panic!("{e:?}\n{saved}"));
        // Restored in sorted order: compare as sets of services with sets of dests.
        let key = |t: &TableOnlyDirector| {
            let mut v: Vec<ServiceSpec> = t.table().services.clone();
            for s in &mut v {
                s.dests.sort_by_key(|d| (d.addr, d.port));
            }
            v.sort_by_key(|s| s.addr);
            v
        };
        assert_eq!(key(&again), key(&d), "\n{saved}");
        // The listings agree too.
        let f = ListFormat {
            numeric: true,
            ..Default::default()
        };
        assert_eq!(
            listing::render_all(
                &again.list(&ListRequest::Services).unwrap(),
                &f,
                &Names::none()
            ),
            listing::render_all(&data, &f, &Names::none())
        );
    }
    assert!(
        checked_dests > 300,
        "the generator made too few real servers: {checked_dests}"
    );
}
