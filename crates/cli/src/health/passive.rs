//! Passive detection, as DPVS does it: a real server whose new connections stay in
//! SYN_RECV is suspect. In DR and TUN the director sees only the client's side, so a
//! server that does not answer (or resets the client directly) leaves its connections in
//! SYN_RECV until they time out; healthy ones reach ESTABLISHED with the client's ACK.
//!
//! [`SynRecvTracker`] is fed a walk of the connection table every second or so (from the
//! health thread, never a worker) and remembers since when each connection has been in
//! SYN_RECV; [`PassiveState`] turns the stuck ones of one real server into "suspect" and,
//! when so configured, a quiesce for a while.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use xvs_conntrack::{ConnTable, Listed, Protocol as ConnProtocol, TcpState};
use xvs_dataplane::service::spec::{Protocol, ServiceAddr};

use super::spec::{DestKey, PassiveSpec};

/// The most connections the tracker remembers (under a SYN flood, the rest are not
/// tracked until some leave SYN_RECV).
pub const MAX_TRACKED: usize = 200_000;

/// Since when each connection has been seen in SYN_RECV.
#[derive(Debug)]
pub struct SynRecvTracker<Id> {
    seen: HashMap<Id, (DestKey, Instant)>,
}

impl<Id: Hash + Eq + Copy> Default for SynRecvTracker<Id> {
    fn default() -> Self {
        SynRecvTracker {
            seen: HashMap::new(),
        }
    }
}

impl<Id: Hash + Eq + Copy> SynRecvTracker<Id> {
    /// One walk's SYN_RECV connections (`id` unique per connection, `key` its real
    /// server): forgets those no longer there, and returns, for each real server, since
    /// when each of its connections has been in SYN_RECV.
    pub fn observe(
        &mut self,
        now: Instant,
        walk: impl IntoIterator<Item = (Id, DestKey)>,
    ) -> HashMap<DestKey, Vec<Instant>> {
        let mut next = HashMap::with_capacity(self.seen.len());
        for (id, key) in walk {
            if next.len() >= MAX_TRACKED {
                break;
            }
            let first = match self.seen.get(&id) {
                Some((k, first)) if *k == key => *first,
                _ => now,
            };
            next.insert(id, (key, first));
        }
        self.seen = next;
        let mut by_dest: HashMap<DestKey, Vec<Instant>> = HashMap::new();
        for (key, first) in self.seen.values() {
            by_dest.entry(*key).or_default().push(*first);
        }
        by_dest
    }
}

/// The TCP connections in SYN_RECV of a table, keyed by slot and generation, each with
/// its service and real server.
pub fn syn_recv_walk(table: &ConnTable) -> Vec<((u16, u32, u32), DestKey)> {
    let mut out = Vec::new();
    for shard in 0..table.shard_count() {
        table.for_each_entry(shard as u16, |e: Listed| {
            if e.template || e.proto != Some(ConnProtocol::Tcp) || e.state != TcpState::SynRecv {
                return;
            }
            let key = DestKey {
                service: ServiceAddr::Inet {
                    protocol: Protocol::Tcp,
                    addr: e.vip.addr.to_ip(),
                    port: e.vip.port,
                },
                addr: e.dest_addr.addr.to_ip(),
                port: e.dest_addr.port,
            };
            out.push(((e.flow.shard, e.flow.slot, e.flow.generation), key));
        });
    }
    out
}

/// What passive detection thinks of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveState {
    /// Connections stuck in SYN_RECV at the last walk.
    pub stuck: u32,
    /// Whether the server is suspect now.
    pub suspect: bool,
    /// How often it became suspect.
    pub times_suspected: u64,
    /// Quiesced (weight 0) until then, when the spec says so.
    pub quiesced_until: Option<Instant>,
    /// Connections first seen in SYN_RECV before this do not count (those left from
    /// before a quiesce ended); `None`: all count.
    pub counts_from: Option<Instant>,
}

/// A change passive detection logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveEvent {
    /// It became suspect (and, if configured, was quiesced).
    Suspect,
    /// No longer suspect.
    Cleared,
    /// Its quiesce ended; it takes new connections again.
    Released,
}

impl Default for PassiveState {
    fn default() -> Self {
        PassiveState::new()
    }
}

impl PassiveState {
    /// Nothing seen yet.
    pub fn new() -> Self {
        PassiveState {
            stuck: 0,
            suspect: false,
            times_suspected: 0,
            quiesced_until: None,
            counts_from: None,
        }
    }

    /// Whether passive detection holds the server at weight 0.
    pub fn holds(&self) -> bool {
        self.quiesced_until.is_some()
    }

    /// One walk's view of the server (`first_seen`: since when each of its connections has
    /// been in SYN_RECV); the change, if any.
    pub fn update(
        &mut self,
        spec: &PassiveSpec,
        first_seen: &[Instant],
        now: Instant,
    ) -> Option<PassiveEvent> {
        self.stuck = first_seen
            .iter()
            .filter(|&&first| {
                self.counts_from.is_none_or(|from| first >= from)
                    && now.saturating_duration_since(first) >= spec.syn_recv
            })
            .count() as u32;
        if let Some(until) = self.quiesced_until {
            if now < until {
                return None;
            }
            self.quiesced_until = None;
            self.suspect = false;
            self.stuck = 0;
            self.counts_from = Some(now);
            return Some(PassiveEvent::Released);
        }
        if !self.suspect && self.stuck >= spec.min_stuck {
            self.suspect = true;
            self.times_suspected += 1;
            if spec.quiesce {
                self.quiesced_until = Some(now + spec.hold);
            }
            return Some(PassiveEvent::Suspect);
        }
        if self.suspect && self.stuck < spec.min_stuck {
            self.suspect = false;
            return Some(PassiveEvent::Cleared);
        }
        None
    }
}

/// How often the table is walked.
pub const WALK_PERIOD: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8) -> DestKey {
        DestKey {
            service: ServiceAddr::Inet {
                protocol: Protocol::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
            },
            addr: format!("10.0.1.{last}").parse().unwrap(),
            port: 80,
        }
    }

    #[test]
    fn the_tracker_remembers_first_sightings_and_forgets_what_left() {
        let mut t = SynRecvTracker::<u32>::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        t.observe(t0, [(1, key(1)), (2, key(1))]);
        let seen = t.observe(t1, [(1, key(1)), (3, key(2))]);
        assert_eq!(seen[&key(1)], vec![t0], "2 left, 1 kept its first sighting");
        assert_eq!(seen[&key(2)], vec![t1]);
        // A reused id for another server is another connection.
        let seen = t.observe(t1 + Duration::from_secs(1), [(1, key(2))]);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[&key(2)], vec![t1 + Duration::from_secs(1)]);
    }

    #[test]
    fn stuck_connections_make_a_server_suspect_quiesce_it_and_release_it() {
        let spec = PassiveSpec {
            syn_recv: Duration::from_secs(3),
            min_stuck: 2,
            quiesce: true,
            hold: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = PassiveState::new();
        assert_eq!(p.update(&spec, &[at(0), at(1)], at(2)), None, "too young");
        assert_eq!(p.update(&spec, &[at(0), at(5)], at(5)), None, "one stuck");
        assert_eq!(
            p.update(&spec, &[at(0), at(1)], at(4)),
            Some(PassiveEvent::Suspect)
        );
        assert!(p.holds() && p.times_suspected == 1);
        assert_eq!(p.update(&spec, &[], at(10)), None, "held");
        assert_eq!(
            p.update(&spec, &[at(0), at(1)], at(14)),
            Some(PassiveEvent::Released)
        );
        assert!(!p.holds());
        // What was stuck before the release does not count again.
        assert_eq!(p.update(&spec, &[at(0), at(1)], at(20)), None);
        assert_eq!(
            p.update(&spec, &[at(0), at(15), at(16)], at(20)),
            Some(PassiveEvent::Suspect)
        );
        let watch = PassiveSpec {
            quiesce: false,
            ..spec
        };
        let mut w = PassiveState::new();
        assert_eq!(
            w.update(&watch, &[at(0), at(0)], at(5)),
            Some(PassiveEvent::Suspect)
        );
        assert!(!w.holds(), "only logged and counted");
        assert_eq!(w.update(&watch, &[], at(6)), Some(PassiveEvent::Cleared));
    }
}
