//! The compiled service table the workers read.
//!
//! The control plane edits a [`ServiceTableSpec`]; [`SnapshotBuilder::build`] compiles it into
//! an immutable [`Snapshot`]: a classification map from `(protocol, VIP, port)` to service,
//! each service's scheduler view of its real servers, and a table from [`DestId`] (the handle
//! the connection table stores) to the real server. Workers hold an `Arc<Snapshot>` and swap
//! to a new one between batches, so a reload never stops the data path.
//!
//! Real servers keep their identity across rebuilds: the builder remembers every
//! `(service, address, port)` it has seen, so an edited server keeps its [`DestId`] and its
//! connection counters ([`ServerLoad`]), and the connections the table holds for it keep
//! working. A removed server's id is not handed out again while connections may still name
//! it: ids are a 16-bit slot plus a 16-bit generation bumped on every reuse, and a freed slot
//! is reused only after all 65536 slots were handed out once, oldest first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use xvs_conntrack::{DestCounters, DestId, DestStatus, Persistence, PersistenceMask};
use xvs_sched::{ConnKind, RealServer, ServerLoad};

use super::spec::{DestSpec, ForwardMethod, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec};

/// At most this many real servers exist at once (over all services): the slot part of a
/// [`DestId`] is 16 bits, and per-worker statistics are arrays of this size.
pub const MAX_DESTS: usize = 1 << 16;

/// `DestId` = generation << 16 | slot.
#[inline]
pub fn dest_slot(id: DestId) -> usize {
    (id.0 & 0xffff) as usize
}

pub use super::classify::ClassKey;
use super::classify::Classifier;
pub use super::classify6::ClassKey6;
use super::classify6::Classifier6;
use super::marks::{MarkClassifier, NO_SERVICE};
use xvs_model::mark::MarkRule;

/// One real server as the data path needs it.
#[derive(Debug, Clone)]
pub struct Dest {
    /// The handle connections store.
    pub id: DestId,
    /// Address, port, method, weight and thresholds as configured.
    pub spec: DestSpec,
    /// Index of the owning service in [`Snapshot::services`].
    pub service: u16,
}

/// One virtual service, compiled.
#[derive(Debug, Clone)]
pub struct Service {
    /// The configuration it came from.
    pub spec: ServiceSpec,
    /// The connection table's name for it (template keys use it).
    pub key: xvs_conntrack::ServiceKey,
    /// `-p`/`-M`, in the connection table's terms.
    pub persistence: Option<Persistence>,
    /// The scheduler's view, index-aligned with `dests`.
    pub servers: Vec<RealServer>,
    /// The real servers, in configuration order.
    pub dests: Vec<Dest>,
}

/// An immutable compiled service table.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every build; workers compare it to notice a new table.
    pub generation: u64,
    /// The services, in configuration order.
    pub services: Vec<Service>,
    classify: Classifier,
    /// The mark rules, asked before `classify` (fwmark services first, as IPVS).
    marks: MarkClassifier,
    /// The IPv6 services' own table, beside the IPv4 one.
    classify6: Classifier6,
    /// Indexed by a [`DestId`]'s slot: the live real server there, dense so a packet's
    /// lookup is one bounds-checked load (slots are handed out from 0 up, see the builder).
    by_slot: Vec<SlotRef>,
}

/// Where a live real server sits in a snapshot, by its [`DestId`] slot.
#[derive(Debug, Clone, Copy)]
struct SlotRef {
    /// `generation + 1` of the id in the slot; 0: no live server there.
    tag: u32,
    service: u16,
    index: u16,
    /// Its forwarding method, here so the fast path reads one entry.
    method: ForwardMethod,
}

impl Default for SlotRef {
    fn default() -> Self {
        SlotRef {
            tag: 0,
            service: 0,
            index: 0,
            method: ForwardMethod::Route,
        }
    }
}

impl Snapshot {
    /// The service a packet to `vip:port` over `protocol` (6 TCP, 17 UDP) belongs to: an
    /// exact `(VIP, port)` service first, else a persistent port-0 service of the VIP.
    #[inline]
    pub fn classify(&self, protocol: u8, vip: Ipv4Addr, port: u16) -> Option<usize> {
        let vip = u32::from(vip);
        self.classify
            .get((protocol, vip, port))
            .or_else(|| self.classify.get((protocol, vip, 0)))
            .map(usize::from)
    }

    /// The fwmark service of an IPv4 packet to `dst:port`: the mark rules give the packet a
    /// mark, and a `-f` service of that mark serves it. `None` if unmarked, or if no service
    /// has its mark (then IPVS goes on to the address services, see [`Self::service_for`]).
    #[inline]
    pub fn marked_service_v4(&self, protocol: u8, dst: Ipv4Addr, port: u16) -> Option<usize> {
        let marked = self.marks.mark_v4(protocol, dst, port)?;
        (marked.service != NO_SERVICE).then_some(usize::from(marked.service))
    }

    /// [`Self::marked_service_v4`] for an IPv6 packet (its destination's 16 bytes).
    #[inline]
    pub fn marked_service_v6(&self, protocol: u8, dst: &[u8; 16], port: u16) -> Option<usize> {
        let marked = self.marks.mark_v6(protocol, dst, port)?;
        (marked.service != NO_SERVICE).then_some(usize::from(marked.service))
    }

    /// The service of an IPv4 packet in IPVS's order (`ip_vs_service_find`): the fwmark
    /// service of the packet's mark, else [`Self::classify`]'s `(protocol, VIP, port)` one.
    #[inline]
    pub fn service_for(&self, protocol: u8, dst: Ipv4Addr, port: u16) -> Option<usize> {
        if !self.marks.is_empty()
            && let Some(service) = self.marked_service_v4(protocol, dst, port)
        {
            return Some(service);
        }
        self.classify(protocol, dst, port)
    }

    /// [`Self::service_for`] for an IPv6 packet to `[dst]:port`.
    #[inline]
    pub fn service_for6(&self, protocol: u8, dst: Ipv6Addr, port: u16) -> Option<usize> {
        if !self.marks.is_empty()
            && let Some(service) = self.marked_service_v6(protocol, &dst.octets(), port)
        {
            return Some(service);
        }
        self.classify6(protocol, dst, port)
    }

    /// The compiled mark rules (the XDP filter's entries, listings).
    pub fn marks(&self) -> &MarkClassifier {
        &self.marks
    }

    /// [`classify`](Self::classify) for an IPv6 packet to `[vip]:port`.
    #[inline]
    pub fn classify6(&self, protocol: u8, vip: Ipv6Addr, port: u16) -> Option<usize> {
        self.classify6
            .get((protocol, vip, port))
            .or_else(|| self.classify6.get((protocol, vip, 0)))
            .map(usize::from)
    }

    /// The live real server behind `id`, with its service.
    #[inline]
    pub fn dest(&self, id: DestId) -> Option<(&Service, &Dest, &RealServer)> {
        let slot = self.by_slot.get(dest_slot(id))?;
        if slot.tag != (id.0 >> 16) + 1 {
            return None;
        }
        let service = self.services.get(slot.service as usize)?;
        Some((
            service,
            service.dests.get(slot.index as usize)?,
            service.servers.get(slot.index as usize)?,
        ))
    }

    /// The forwarding method of the live real server behind `id` (one load by its slot).
    #[inline(always)]
    pub fn dest_method(&self, id: DestId) -> Option<ForwardMethod> {
        let slot = self.by_slot.get(dest_slot(id))?;
        (slot.tag == (id.0 >> 16) + 1).then_some(slot.method)
    }

    /// Every live real server's load, by id (statistics and listings).
    pub fn dests(&self) -> impl Iterator<Item = (&Service, &Dest, &RealServer)> {
        self.services
            .iter()
            .flat_map(|s| s.dests.iter().zip(&s.servers).map(move |(d, r)| (s, d, r)))
    }

    /// The IPv4 addresses and ports the XDP filter must send to xvs: every VIP:port, and for
    /// NAT real servers their address:port (replies come back from there).
    pub fn filter_matches(&self) -> (Vec<ClassKey>, Vec<ClassKey>) {
        let vips = self.classify.iter().map(|(key, _)| key).collect();
        let nat = self.nat_returns(|addr| match addr {
            IpAddr::V4(rip) => Some(u32::from(rip)),
            IpAddr::V6(_) => None,
        });
        (vips, nat)
    }

    /// [`filter_matches`](Self::filter_matches) for IPv6: every `[VIP]:port`, and every
    /// IPv6 NAT real server's `[address]:port`.
    pub fn filter_matches6(&self) -> (Vec<ClassKey6>, Vec<ClassKey6>) {
        let vips = self.classify6.iter().map(|(key, _)| key).collect();
        let nat = self.nat_returns(|addr| match addr {
            IpAddr::V6(rip) => Some(rip),
            IpAddr::V4(_) => None,
        });
        (vips, nat)
    }

    /// `(protocol, address, port)` of every NAT real server whose address `family` takes
    /// (its replies come back from there), sorted and without repeats. A fwmark service's
    /// NAT real server answers from its own port, or for a port-0 server from any port the
    /// mark's rules of its family give (each listed while there are at most
    /// [`MAX_EXPANDED_PORTS`], else "any port" of the protocol, as for the NAT real server
    /// of a port-0 service).
    fn nat_returns<A: Copy + Ord>(
        &self,
        family: impl Fn(IpAddr) -> Option<A>,
    ) -> Vec<(u8, A, u16)> {
        let mut nat = Vec::new();
        for (service, dest, _) in self.dests() {
            if dest.spec.method != ForwardMethod::Masq {
                continue;
            }
            let Some(rip) = family(dest.spec.addr) else {
                continue;
            };
            let port = dest.spec.port;
            match service.spec.addr {
                ServiceAddr::Inet { protocol, .. } => nat.push((ip_protocol(protocol), rip, port)),
                ServiceAddr::Fwmark { mark, ipv6 } => {
                    for rule in self
                        .marks
                        .rules()
                        .iter()
                        .filter(|r| r.mark == mark && r.destination.is_ipv6() == ipv6)
                    {
                        let protocol = ip_protocol(rule.protocol);
                        let ports: usize = rule
                            .ports
                            .iter()
                            .map(|r| usize::from(r.last - r.first) + 1)
                            .sum();
                        if port != 0 {
                            nat.push((protocol, rip, port));
                        } else if ports <= MAX_EXPANDED_PORTS {
                            for range in &rule.ports {
                                nat.extend((range.first..=range.last).map(|p| (protocol, rip, p)));
                            }
                        } else {
                            nat.push((protocol, rip, 0));
                        }
                    }
                }
            }
        }
        nat.sort_unstable();
        nat.dedup();
        nat
    }
}

/// A port-0 NAT real server of a fwmark service has its rules' ports listed one by one in
/// the XDP filter's NAT-return map up to this many per rule; beyond, the filter takes every
/// port of the protocol from it.
pub const MAX_EXPANDED_PORTS: usize = 1024;

/// IP protocol number of a service protocol.
pub fn ip_protocol(protocol: Protocol) -> u8 {
    protocol as u8
}

/// The connection table's view of real servers: available while in the snapshot, quiescent at
/// weight 0.
impl DestStatus for Snapshot {
    #[inline]
    fn is_available(&self, dest: DestId) -> bool {
        self.dest(dest).is_some()
    }

    fn is_quiescent(&self, dest: DestId) -> bool {
        self.dest(dest)
            .is_some_and(|(_, _, server)| server.weight == 0)
    }
}

/// Applies the connection table's counter reports to the real servers' shared [`ServerLoad`]
/// (ActiveConn, InActConn, PersistConn and the OVERLOAD thresholds). Reports about a server
/// that was removed meanwhile have nothing left to count and are ignored.
pub struct LoadCounters<'a>(pub &'a Snapshot);

impl DestCounters for LoadCounters<'_> {
    fn conn_bound(&mut self, dest: DestId) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.bind(ConnKind::Inactive);
        }
    }

    fn conn_activated(&mut self, dest: DestId) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.load.conn_activated();
        }
    }

    fn conn_deactivated(&mut self, dest: DestId) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.load.conn_deactivated();
        }
    }

    fn conn_released(&mut self, dest: DestId, was_active: bool) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.unbind(if was_active {
                ConnKind::Active
            } else {
                ConnKind::Inactive
            });
        }
    }

    fn template_bound(&mut self, dest: DestId) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.bind(ConnKind::Template);
        }
    }

    fn template_released(&mut self, dest: DestId) {
        if let Some((_, _, server)) = self.0.dest(dest) {
            server.unbind(ConnKind::Template);
        }
    }
}

/// What the builder remembers of a real server between builds.
#[derive(Debug, Clone)]
struct Known {
    id: DestId,
    load: Arc<ServerLoad>,
    /// The weight before the server was quiesced: mh keeps placing it by this weight.
    last_weight: u32,
}

/// Compiles specs into snapshots, keeping real-server identities between builds.
#[derive(Debug, Default, Clone)]
pub struct SnapshotBuilder {
    generation: u64,
    known: std::collections::HashMap<(ServiceAddr, IpAddr, u16), Known>,
    /// Generation last used per slot.
    slot_generations: Vec<u16>,
    /// The mark rules every build compiles (the config file's `[[mark]]`).
    marks: Vec<MarkRule>,
    /// Freed slots, reused oldest first so a slot rests as long as possible before a new
    /// server takes it (late counter updates of the old server then find it empty).
    free_slots: std::collections::VecDeque<u16>,
}

/// Why a table cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// More real servers than [`MAX_DESTS`].
    #[error("too many real servers: at most {MAX_DESTS} over all services")]
    TooManyDests,
}

impl SnapshotBuilder {
    /// A builder whose first snapshot has generation 1.
    pub fn new() -> Self {
        SnapshotBuilder::default()
    }

    /// The mark rules the next builds compile (accepted by
    /// [`xvs_model::mark::check_rules`]).
    pub fn set_mark_rules(&mut self, rules: &[MarkRule]) {
        self.marks = rules.to_vec();
    }

    /// The mark rules builds compile.
    pub fn mark_rules(&self) -> &[MarkRule] {
        &self.marks
    }

    /// Compiles `table`. Real servers no longer present are forgotten (their slots are
    /// reused later under a new generation).
    pub fn build(&mut self, table: &ServiceTableSpec) -> Result<Snapshot, BuildError> {
        check_supported(table)?;
        let mut seen = std::collections::HashSet::new();
        let mut snapshot = Snapshot {
            generation: self.generation + 1,
            ..Default::default()
        };
        for (service_index, spec) in table.services.iter().enumerate() {
            let mut service = compile_service(spec);
            for (dest_index, dest_spec) in spec.dests.iter().enumerate() {
                let identity = (spec.addr, dest_spec.addr, dest_spec.port);
                seen.insert(identity);
                if !self.known.contains_key(&identity) {
                    let id = self.allocate().ok_or(BuildError::TooManyDests)?;
                    let load = Arc::new(ServerLoad::default());
                    self.known.insert(
                        identity,
                        Known {
                            id,
                            load,
                            last_weight: dest_spec.weight,
                        },
                    );
                }
                let known = self.known.get_mut(&identity).expect("inserted above");
                if dest_spec.weight > 0 {
                    known.last_weight = dest_spec.weight;
                }
                let mut server = RealServer::new(dest_spec.addr, dest_spec.port, dest_spec.weight)
                    .with_thresholds(dest_spec.upper_threshold, dest_spec.lower_threshold);
                server.load = known.load.clone();
                server.last_weight = known.last_weight;
                service.servers.push(server);
                service.dests.push(Dest {
                    id: known.id,
                    spec: *dest_spec,
                    service: service_index as u16,
                });
                let slot = dest_slot(known.id);
                if snapshot.by_slot.len() <= slot {
                    snapshot.by_slot.resize(slot + 1, SlotRef::default());
                }
                snapshot.by_slot[slot] = SlotRef {
                    tag: (known.id.0 >> 16) + 1,
                    service: service_index as u16,
                    index: dest_index as u16,
                    method: dest_spec.method,
                };
            }
            match spec.addr {
                ServiceAddr::Inet {
                    protocol,
                    addr: IpAddr::V4(vip),
                    port,
                } => snapshot.classify.insert(
                    (ip_protocol(protocol), u32::from(vip), port),
                    service_index as u16,
                ),
                ServiceAddr::Inet {
                    protocol,
                    addr: IpAddr::V6(vip),
                    port,
                } => snapshot
                    .classify6
                    .insert((ip_protocol(protocol), vip, port), service_index as u16),
                ServiceAddr::Fwmark { .. } => {}
            }
            snapshot.services.push(service);
        }
        let services = &snapshot.services;
        snapshot.marks = MarkClassifier::new(&self.marks, |mark, ipv6| {
            let addr = ServiceAddr::Fwmark { mark, ipv6 };
            services
                .iter()
                .position(|s| s.spec.addr == addr)
                .map(|i| i as u16)
        });
        // Forget what is gone; its slot becomes reusable under a new generation.
        let gone: Vec<_> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .copied()
            .collect();
        for identity in gone {
            if let Some(known) = self.known.remove(&identity) {
                self.free_slots.push_back((known.id.0 & 0xffff) as u16);
            }
        }
        self.generation = snapshot.generation;
        Ok(snapshot)
    }

    /// A fresh id: a free slot under its next generation, or a new slot.
    fn allocate(&mut self) -> Option<DestId> {
        // New slots first; freed ones, oldest first, only once all 65536 were handed out.
        let slot = if self.slot_generations.len() < MAX_DESTS {
            self.slot_generations.push(0);
            (self.slot_generations.len() - 1) as u16
        } else {
            self.free_slots.pop_front()?
        };
        let generation = &mut self.slot_generations[slot as usize];
        *generation = generation.wrapping_add(1);
        Some(DestId(u32::from(*generation) << 16 | u32::from(slot)))
    }
}

fn compile_service(spec: &ServiceSpec) -> Service {
    let family = if spec.is_ipv6() {
        xvs_conntrack::Family::V6
    } else {
        xvs_conntrack::Family::V4
    };
    let key = match spec.addr {
        ServiceAddr::Inet {
            protocol,
            addr,
            port,
        } => xvs_conntrack::ServiceKey::Addr {
            proto: protocol,
            vip: conntrack_addr(addr),
            port,
        },
        ServiceAddr::Fwmark { mark, .. } => xvs_conntrack::ServiceKey::Fwmark { mark, family },
    };
    let persistence = spec.persistence.map(|p| Persistence {
        timeout: p.timeout_secs,
        mask: match family {
            xvs_conntrack::Family::V4 => PersistenceMask::v4_prefix(p.prefix_len),
            xvs_conntrack::Family::V6 => PersistenceMask::v6_prefix(p.prefix_len),
        },
    });
    Service {
        spec: spec.clone(),
        key,
        persistence,
        servers: Vec::new(),
        dests: Vec::new(),
    }
}

/// A std address in the connection table's form.
pub fn conntrack_addr(addr: IpAddr) -> xvs_conntrack::Addr {
    match addr {
        IpAddr::V4(a) => xvs_conntrack::Addr::v4(a.octets()),
        IpAddr::V6(a) => xvs_conntrack::Addr::v6(a.octets()),
    }
}

/// Whether `table` can be compiled: its real servers must fit [`MAX_DESTS`]. The control
/// plane asks before it accepts an edit, so a refused edit changes nothing.
pub fn check_supported(table: &ServiceTableSpec) -> Result<(), BuildError> {
    if table.services.iter().map(|s| s.dests.len()).sum::<usize>() > MAX_DESTS {
        return Err(BuildError::TooManyDests);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::spec::PersistenceSpec;

    fn table(dests: &[(u8, u32)]) -> ServiceTableSpec {
        let addr = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 80,
        };
        let mut t = ServiceTableSpec::default();
        t.add_service(ServiceSpec::new(addr)).unwrap();
        for &(last, weight) in dests {
            let d = DestSpec {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
                port: 80,
                method: ForwardMethod::Route,
                weight,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            t.add_dest(&addr, d).unwrap();
        }
        t
    }

    #[test]
    fn classifies_by_protocol_vip_and_port_with_port_zero_as_catch_all() {
        let mut t = table(&[(1, 1)]);
        let any_port = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            port: 0,
        };
        let mut persistent = ServiceSpec::new(any_port);
        persistent.persistence = Some(PersistenceSpec {
            timeout_secs: 300,
            prefix_len: 32,
        });
        t.add_service(persistent).unwrap();
        let s = SnapshotBuilder::new().build(&t).unwrap();
        assert_eq!(s.classify(6, Ipv4Addr::new(192, 0, 2, 1), 80), Some(0));
        assert_eq!(s.classify(6, Ipv4Addr::new(192, 0, 2, 1), 81), None);
        assert_eq!(s.classify(17, Ipv4Addr::new(192, 0, 2, 1), 80), None);
        assert_eq!(s.classify(6, Ipv4Addr::new(192, 0, 2, 2), 443), Some(1));
    }

    #[test]
    fn edited_servers_keep_id_and_counters_removed_ones_vanish() {
        let mut builder = SnapshotBuilder::new();
        let first = builder.build(&table(&[(1, 1), (2, 1)])).unwrap();
        let (id_a, id_b) = (first.services[0].dests[0].id, first.services[0].dests[1].id);
        first.services[0].servers[0].bind(ConnKind::Active);
        // Reweight a, drop b.
        let second = builder.build(&table(&[(1, 5)])).unwrap();
        assert_eq!(second.generation, first.generation + 1);
        let (_, dest, server) = second.dest(id_a).unwrap();
        assert_eq!((dest.spec.weight, server.load.active()), (5, 1));
        // Quiescing keeps the weight mh places the server by.
        let quiet = builder.build(&table(&[(1, 0)])).unwrap();
        assert_eq!(quiet.dest(id_a).unwrap().2.last_weight, 5);
        let second = builder.build(&table(&[(1, 5)])).unwrap();
        assert!(second.dest(id_b).is_none());
        assert!(!second.is_available(id_b));
        // b comes back: a new id (new generation of a slot), so old connections stay dead.
        let third = builder.build(&table(&[(1, 5), (2, 1)])).unwrap();
        let new_b = third.services[0].dests[1].id;
        assert_ne!(new_b, id_b);
        assert!(third.dest(id_b).is_none());
    }

    #[test]
    fn counter_reports_reach_the_shared_load() {
        let s = SnapshotBuilder::new().build(&table(&[(1, 0)])).unwrap();
        let id = s.services[0].dests[0].id;
        let mut counters = LoadCounters(&s);
        counters.conn_bound(id);
        counters.conn_activated(id);
        counters.template_bound(id);
        let load = &s.services[0].servers[0].load;
        assert_eq!(
            (load.active(), load.inactive(), load.persistent()),
            (1, 0, 1)
        );
        assert!(s.is_quiescent(id));
        assert_eq!(
            s.services[0].servers[0].last_weight, 0,
            "never weighted: no mh slots"
        );
        counters.conn_released(id, true);
        counters.template_released(id);
        assert_eq!(
            (load.active(), load.inactive(), load.persistent()),
            (0, 0, 0)
        );
    }

    #[test]
    fn ipv6_services_classify_in_their_own_table_beside_ipv4() {
        let mut t = table(&[(1, 1)]);
        let vip6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let v6 = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V6(vip6),
            port: 80,
        };
        let mut persistent = ServiceSpec::new(ServiceAddr::Inet {
            protocol: Protocol::Udp,
            addr: IpAddr::V6(vip6),
            port: 0,
        });
        persistent.persistence = Some(PersistenceSpec {
            timeout_secs: 300,
            prefix_len: 64,
        });
        t.add_service(ServiceSpec::new(v6)).unwrap();
        t.add_service(persistent).unwrap();
        for last in [2u16, 3] {
            let d = DestSpec {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)),
                port: 80,
                method: if last == 2 {
                    ForwardMethod::Masq
                } else {
                    ForwardMethod::Route
                },
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            t.add_dest(&v6, d).unwrap();
        }
        let s = SnapshotBuilder::new().build(&t).unwrap();
        assert_eq!(s.classify6(6, vip6, 80), Some(1));
        assert_eq!(s.classify6(6, vip6, 81), None);
        assert_eq!(s.classify6(17, vip6, 53), Some(2), "port-0 persistent");
        assert_eq!(s.classify6(6, "2001:db8::11".parse().unwrap(), 80), None);
        // The IPv4 table is unchanged, and an IPv4-mapped form of an IPv4 VIP is no match.
        assert_eq!(s.classify(6, Ipv4Addr::new(192, 0, 2, 1), 80), Some(0));
        assert_eq!(
            s.classify6(6, Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(), 80),
            None
        );
        // -M 64 masks the client to its /64.
        let mask = s.services[2].persistence.unwrap().mask;
        assert_eq!(mask, PersistenceMask::v6_prefix(64));
        let (vips, nat) = s.filter_matches6();
        let mut vips = vips;
        vips.sort();
        assert_eq!(vips, vec![(6, vip6, 80), (17, vip6, 0)]);
        assert_eq!(
            nat,
            vec![(6, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2), 80)]
        );
        assert_eq!(s.filter_matches().0.len(), 1, "IPv4 matches stay IPv4 only");
    }

    /// IPv6 fwmark services as IPv4's: an IPv6 packet's mark picks the IPv6 service of that
    /// mark (never the IPv4 one of the same number), before the address services, and their
    /// NAT real servers' replies are filtered on the IPv6 rules' ports.
    #[test]
    fn ipv6_fwmark_services_serve_ipv6_marks_only() {
        let mut t = ServiceTableSpec::default();
        let vip6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let address = ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V6(vip6),
            port: 80,
        };
        let fwm4 = ServiceAddr::Fwmark {
            mark: 1,
            ipv6: false,
        };
        let fwm6 = ServiceAddr::Fwmark {
            mark: 1,
            ipv6: true,
        };
        for addr in [address, fwm4, fwm6] {
            t.add_service(ServiceSpec::new(addr)).unwrap();
        }
        let rip6: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        t.add_dest(
            &fwm6,
            DestSpec {
                addr: IpAddr::V6(rip6),
                port: 0,
                method: ForwardMethod::Masq,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        )
        .unwrap();
        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(&[
            mark_rule(1, "2001:db8::/64", &["80", "443"]),
            mark_rule(1, "192.0.2.1", &["80"]),
        ]);
        let s = builder.build(&t).unwrap();
        assert_eq!(s.service_for6(6, vip6, 80), Some(2), "the mark first");
        assert_eq!(s.service_for6(6, vip6, 443), Some(2));
        assert_eq!(s.service_for6(6, vip6, 81), None);
        assert_eq!(s.service_for6(17, vip6, 80), None, "TCP rules only");
        assert_eq!(
            s.service_for(6, Ipv4Addr::new(192, 0, 2, 1), 80),
            Some(1),
            "an IPv4 packet of mark 1 finds the IPv4 service"
        );
        assert_eq!(s.filter_matches6().1, vec![(6, rip6, 80), (6, rip6, 443)]);
        assert!(s.filter_matches().1.is_empty());
        // Without rules the address service takes its port again.
        builder.set_mark_rules(&[]);
        let s = builder.build(&t).unwrap();
        assert_eq!(s.service_for6(6, vip6, 80), Some(0));
    }

    fn mark_rule(mark: u32, dst: &str, ports: &[&str]) -> MarkRule {
        MarkRule {
            mark,
            protocol: Protocol::Tcp,
            destination: dst.parse().unwrap(),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    /// IPVS's `ip_vs_service_find`: the fwmark service of a marked packet first, then the
    /// `(protocol, VIP, port)` service; a mark no service has falls through.
    #[test]
    fn a_marked_packet_finds_its_fwmark_service_before_the_address_service() {
        let mut t = table(&[(1, 1)]);
        let fwm = ServiceAddr::Fwmark {
            mark: 1,
            ipv6: false,
        };
        t.add_service(ServiceSpec::new(fwm)).unwrap();
        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(&[
            mark_rule(1, "192.0.2.1", &["80", "443"]),
            mark_rule(2, "192.0.2.1", &["8080"]),
        ]);
        let s = builder.build(&t).unwrap();
        let vip = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(s.classify(6, vip, 80), Some(0));
        assert_eq!(s.service_for(6, vip, 80), Some(1));
        assert_eq!(s.service_for(6, vip, 443), Some(1));
        assert_eq!(s.service_for(17, vip, 443), None);
        assert_eq!(
            s.marked_service_v4(6, vip, 8080),
            None,
            "mark 2 has no service"
        );
        assert_eq!(s.service_for(6, vip, 81), None);
        // Without rules the fwmark service gets nothing and the address service all.
        builder.set_mark_rules(&[]);
        let s = builder.build(&t).unwrap();
        assert_eq!(s.service_for(6, vip, 80), Some(0));
        assert_eq!(s.service_for(6, vip, 443), None);
    }

    #[test]
    fn nat_real_servers_of_fwmark_services_are_filtered_on_the_marks_ports() {
        let mut t = ServiceTableSpec::default();
        let fwm = ServiceAddr::Fwmark {
            mark: 1,
            ipv6: false,
        };
        t.add_service(ServiceSpec::new(fwm)).unwrap();
        for (last, port) in [(2, 0), (3, 8080)] {
            t.add_dest(
                &fwm,
                DestSpec {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
                    port,
                    method: ForwardMethod::Masq,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                },
            )
            .unwrap();
        }
        let mut builder = SnapshotBuilder::new();
        builder.set_mark_rules(&[
            mark_rule(1, "192.0.2.1", &["80", "443"]),
            mark_rule(1, "192.0.2.0/24", &["1-65535"]),
        ]);
        let (vips, nat) = builder.build(&t).unwrap().filter_matches();
        assert!(
            vips.is_empty(),
            "marked destinations go to the filter's mark map"
        );
        let rip = |last| u32::from(Ipv4Addr::new(10, 0, 0, last));
        assert_eq!(
            nat,
            vec![
                (6, rip(2), 0),
                (6, rip(2), 80),
                (6, rip(2), 443),
                (6, rip(3), 8080)
            ]
        );
    }
}
