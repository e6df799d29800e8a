//! Helpers shared by the scheduler tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use xvs_sched::{ConnKind, RealServer, Request, SchedOptions, Scheduler, new_scheduler};

/// Servers 10.0.0.1, 10.0.0.2, ... on port 80 with the given weights.
pub fn servers(weights: &[u32]) -> Vec<RealServer> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| RealServer::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)), 80, w))
        .collect()
}

pub fn build(name: &str, servers: &[RealServer]) -> Box<dyn Scheduler> {
    new_scheduler(name, &SchedOptions::default(), servers).unwrap()
}

pub fn build_with(name: &str, options: SchedOptions, servers: &[RealServer]) -> Box<dyn Scheduler> {
    new_scheduler(name, &options, servers).unwrap()
}

/// A request from client 192.0.2.x:port to the VIP.
pub fn from_client(host: u32, port: u16) -> Request {
    Request {
        src: IpAddr::V4(Ipv4Addr::from(0xC000_0200 + host)),
        src_port: port,
        dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        dst_port: 80,
        now_ms: 0,
    }
}

/// A request for destination 203.0.113.x (lblc, lblcr and dh key on it) at `now_ms`.
pub fn to_destination(host: u8, now_ms: u64) -> Request {
    Request {
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        src_port: 40000,
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, host)),
        dst_port: 80,
        now_ms,
    }
}

pub fn any_request() -> Request {
    from_client(1, 1234)
}

/// Picks `n` times, naming servers a, b, c, ... and binding each pick as an active connection
/// when `bind` is set (as the connection table would).
pub fn sequence(s: &mut dyn Scheduler, servers: &[RealServer], n: usize, bind: bool) -> String {
    (0..n)
        .map(|_| match s.pick(servers, &any_request()) {
            Some(i) => {
                if bind {
                    servers[i].bind(ConnKind::Active);
                }
                (b'a' + i as u8) as char
            }
            None => '-',
        })
        .collect()
}

/// Gives server `i` `active` active and `inactive` inactive connections.
pub fn load(servers: &[RealServer], i: usize, active: u32, inactive: u32) {
    for _ in 0..active {
        servers[i].bind(ConnKind::Active);
    }
    for _ in 0..inactive {
        servers[i].bind(ConnKind::Inactive);
    }
}
