//! Helpers shared by the integration tests: a counter recorder that checks IPVS's counter
//! invariants, a settable real-server status, and key builders.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use xvs_conntrack::*;

/// ActiveConn / InActConn / PersistConn per real server, as the scheduler would keep them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub active: i64,
    pub inactive: i64,
    pub persist: i64,
}

/// Records every counter event and fails the test if a counter would go negative.
#[derive(Debug, Default)]
pub struct Recorder {
    pub by_dest: HashMap<DestId, Counts>,
    pub events: usize,
    /// Per-thread recorders of a multi-worker test see only their share of the events, so
    /// their partial sums may dip below zero; only the merged sum is checked.
    pub partial: bool,
}

impl Recorder {
    pub fn partial() -> Self {
        Recorder {
            partial: true,
            ..Recorder::default()
        }
    }

    pub fn get(&self, dest: DestId) -> Counts {
        self.by_dest.get(&dest).copied().unwrap_or_default()
    }

    fn entry(&mut self, dest: DestId) -> &mut Counts {
        self.events += 1;
        self.by_dest.entry(dest).or_default()
    }

    fn check(&self, c: Counts) {
        if self.partial {
            return;
        }
        assert!(
            c.active >= 0 && c.inactive >= 0 && c.persist >= 0,
            "negative counter {c:?}"
        );
    }

    /// Sum of everything (zero once the table is empty).
    pub fn total(&self) -> Counts {
        self.by_dest
            .values()
            .fold(Counts::default(), |a, b| Counts {
                active: a.active + b.active,
                inactive: a.inactive + b.inactive,
                persist: a.persist + b.persist,
            })
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (d, c) in &other.by_dest {
            let e = self.by_dest.entry(*d).or_default();
            e.active += c.active;
            e.inactive += c.inactive;
            e.persist += c.persist;
        }
        self.events += other.events;
    }
}

impl DestCounters for Recorder {
    fn conn_bound(&mut self, dest: DestId) {
        self.entry(dest).inactive += 1;
    }
    fn conn_activated(&mut self, dest: DestId) {
        let c = self.entry(dest);
        c.inactive -= 1;
        c.active += 1;
        let c = *c;
        self.check(c);
    }
    fn conn_deactivated(&mut self, dest: DestId) {
        let c = self.entry(dest);
        c.active -= 1;
        c.inactive += 1;
        let c = *c;
        self.check(c);
    }
    fn conn_released(&mut self, dest: DestId, was_active: bool) {
        let c = self.entry(dest);
        if was_active {
            c.active -= 1;
        } else {
            c.inactive -= 1;
        }
        let c = *c;
        self.check(c);
    }
    fn template_bound(&mut self, dest: DestId) {
        self.entry(dest).persist += 1;
    }
    fn template_released(&mut self, dest: DestId) {
        let c = self.entry(dest);
        c.persist -= 1;
        let c = *c;
        self.check(c);
    }
}

/// Real servers that can be removed or quiesced during a test.
#[derive(Debug, Default)]
pub struct Servers {
    pub removed: HashSet<DestId>,
    pub quiesced: HashSet<DestId>,
}

impl DestStatus for Servers {
    fn is_available(&self, dest: DestId) -> bool {
        !self.removed.contains(&dest)
    }
    fn is_quiescent(&self, dest: DestId) -> bool {
        self.quiesced.contains(&dest)
    }
}

pub const VIP: [u8; 4] = [192, 0, 2, 1];

pub fn client(i: u32, port: u16) -> Endpoint {
    Endpoint::new(Addr::v4((0x0a00_0000 + i).to_be_bytes()), port)
}

pub fn real_server(n: u8) -> Endpoint {
    Endpoint::new([10, 1, 0, n], 8080)
}

pub fn vip(port: u16) -> Endpoint {
    Endpoint::new(VIP, port)
}

pub fn nat_conn(c: Endpoint, dest: u8) -> NewConn {
    NewConn {
        key: FlowKey::tcp(c, vip(80)),
        dest: DestId(dest as u32),
        dest_addr: real_server(dest),
        return_path: ReturnPath::ViaDirector,
        template: None,
    }
}

pub fn dr_conn(c: Endpoint, dest: u8) -> NewConn {
    NewConn {
        return_path: ReturnPath::Bypass,
        dest_addr: Endpoint::new([10, 1, 0, dest], 80),
        ..nat_conn(c, dest)
    }
}

pub fn config(shards: usize, max: usize) -> Config {
    Config {
        seed: Some(0x1234_5678),
        ..Config::new(shards, max)
    }
}
