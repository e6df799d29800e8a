//! Between the connection table's entries and IPVS's sync entries, against the service table.
//!
//! The master describes an entry by addresses and ports ([`to_wire`]); the backup finds the
//! same virtual service and real server in its own table ([`to_install`]) and refuses what it
//! cannot serve exactly as the master did: an unknown service or real server, another
//! forwarding method (xvs connections follow their real server's method, so a mismatch would
//! send the flow another way), and the sequence adjustment and persistence-engine data xvs
//! does not implement. IPv4 and IPv6 entries both go (IPv6 as `ip_vs_sync_v6`); a
//! connection to a TUN real server of the other family does not (an entry has one family).
//!
//! Firewall-mark services as IPVS syncs them: every connection and template carries the
//! service's mark (`cp->fwmark`), and a template is keyed as `ip_vs_sched_persist` keys it,
//! protocol `IPPROTO_IP`, the mark as its virtual address, port 0. The backup finds a marked
//! entry's service by its mark first, then by its address, as `ip_vs_service_find` does.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_conntrack::{
    Endpoint, Family, FlowKey, Listed, NewConn, Protocol, ReturnPath, Secs, ServiceKey, TcpState,
    TemplateKey,
};
use xvs_sync::SyncConn;
use xvs_sync::wire::flags;

use super::{Install, Reject};
use crate::service::snapshot::{Service, Snapshot, conntrack_addr, ip_protocol};
use crate::service::spec::{ForwardMethod, Protocol as ServiceProtocol};

/// The `IP_VS_CONN_F_*` forwarding method of `method`.
pub fn method_flag(method: ForwardMethod) -> u32 {
    match method {
        ForwardMethod::Masq => flags::MASQ,
        ForwardMethod::Tunnel => flags::TUNNEL,
        ForwardMethod::Route => flags::DROUTE,
    }
}

/// An entry of this director's table as the master sends it, with `now` the workers' clock
/// (seconds left = deadline - now). `None` if its real server is gone.
pub fn to_wire(entry: &Listed, snapshot: &Snapshot, now: Secs) -> Option<SyncConn> {
    // A sync entry has one address family for all three addresses: a connection to a TUN
    // real server of the other family cannot be described (as in IPVS, which syncs no
    // mixed-family connection), and stays this director's.
    if entry.client.addr.family() != entry.dest_addr.addr.family() {
        return None;
    }
    let (service, dest, _) = snapshot.dest(entry.dest)?;
    let method = dest.spec.method;
    let mut f = method_flag(method);
    if entry.template {
        // IPVS templates carry the real server's connection flags.
        f |= flags::TEMPLATE | flags::INACTIVE;
        if method != ForwardMethod::Masq {
            f |= flags::NOOUTPUT;
        }
    } else {
        if !entry.active {
            f |= flags::INACTIVE;
        }
        if entry.no_output {
            f |= flags::NOOUTPUT;
        }
    }
    let fwmark = match service.key {
        ServiceKey::Fwmark { mark, .. } => mark,
        ServiceKey::Addr { .. } => 0,
    };
    let protocol = match entry.proto {
        Some(Protocol::Tcp) => 6,
        Some(Protocol::Udp) => 17,
        Some(Protocol::Icmp) => return None,
        // A fwmark template: IPPROTO_IP.
        None => 0,
    };
    let vaddr = match service.key {
        // `ip_vs_sched_persist` puts the mark in the address's first word, both families.
        ServiceKey::Fwmark { mark, family } if entry.template => match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(mark)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from((mark as u128) << 96)),
        },
        _ => entry.vip.addr.to_ip(),
    };
    Some(SyncConn {
        protocol,
        flags: f,
        state: if entry.template {
            0
        } else {
            entry.state as u16
        },
        cport: entry.client.port,
        vport: entry.vip.port,
        dport: entry.dest_addr.port,
        fwmark,
        timeout: entry.expires.saturating_sub(now).max(1),
        caddr: entry.client.addr.to_ip(),
        vaddr,
        daddr: entry.dest_addr.addr.to_ip(),
        seq: None,
        pe: None,
    })
}

/// The backup's service of `conn` as `ip_vs_service_find` finds it: the `-f` service of its
/// mark and family first, else the (protocol, VIP, port) one (a kernel master also marks
/// connections of address services with the packet's mark).
fn service_of<'a>(conn: &SyncConn, snapshot: &'a Snapshot) -> Result<&'a Service, Reject> {
    let family = if conn.caddr.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    };
    let key = ServiceKey::Fwmark {
        mark: conn.fwmark,
        family,
    };
    let marked = (conn.fwmark != 0)
        .then(|| snapshot.services.iter().position(|s| s.key == key))
        .flatten();
    let index = marked.or_else(|| {
        let proto = match conn.protocol {
            6 => ServiceProtocol::Tcp,
            17 => ServiceProtocol::Udp,
            // A mark template (IPPROTO_IP) has no address service.
            _ => return None,
        };
        match conn.vaddr {
            IpAddr::V4(vip) => snapshot.classify(ip_protocol(proto), vip, conn.vport),
            IpAddr::V6(vip) => snapshot.classify6(ip_protocol(proto), vip, conn.vport),
        }
    });
    index
        .map(|i| &snapshot.services[i])
        .ok_or(Reject::NoService)
}

/// What the backup installs for a received entry, checked against its own services.
pub fn to_install(conn: &SyncConn, snapshot: &Snapshot) -> Result<Install, Reject> {
    if conn.seq.is_some() || conn.pe.is_some() {
        return Err(Reject::Unsupported);
    }
    // Only a fwmark template goes without a protocol (IPPROTO_IP).
    let proto = match conn.protocol {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        0 if conn.is_template() && conn.fwmark != 0 => None,
        _ => return Err(Reject::UnsupportedEntry),
    };
    let service = service_of(conn, snapshot)?;
    let dest = service
        .dests
        .iter()
        .find(|d| d.spec.addr == conn.daddr && (d.spec.port == conn.dport || d.spec.port == 0))
        .ok_or(Reject::NoDest)?;
    if conn.flags & flags::FWD_MASK != method_flag(dest.spec.method) {
        return Err(Reject::MethodMismatch);
    }
    let dest_addr = Endpoint::new(conntrack_addr(conn.daddr), conn.dport);
    let timeout = conn.timeout.max(1);
    if conn.is_template() {
        let persistence = service.persistence.ok_or(Reject::NotPersistent)?;
        return Ok(Install::Template {
            key: TemplateKey::new(&service.key, conntrack_addr(conn.caddr), persistence.mask),
            dest: dest.id,
            dest_addr,
            timeout,
        });
    }
    let Some(proto) = proto else {
        return Err(Reject::UnsupportedEntry);
    };
    let state = match proto {
        Protocol::Tcp => TcpState::ALL
            .get(conn.state as usize)
            .copied()
            .ok_or(Reject::UnsupportedEntry)?,
        _ => TcpState::None,
    };
    Ok(Install::Conn {
        new: NewConn {
            key: FlowKey::new(
                proto,
                Endpoint::new(conntrack_addr(conn.caddr), conn.cport),
                Endpoint::new(conntrack_addr(conn.vaddr), conn.vport),
            ),
            dest: dest.id,
            dest_addr,
            return_path: match dest.spec.method {
                ForwardMethod::Masq => ReturnPath::ViaDirector,
                ForwardMethod::Route | ForwardMethod::Tunnel => ReturnPath::Bypass,
            },
            template: None,
        },
        state,
        timeout,
    })
}

/// The worker whose shard takes `install`, of `workers`: the flow's client tuple hashed, so
/// one flow always lands in one shard. With one queue per worker and RSS, the NIC may hash
/// the flow to another worker: inbound misses then also look in every shard (see
/// [`super::SyncPort::installed_any`]).
pub fn worker_for(install: &Install, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    // SipHash with fixed keys: the same flow picks the same worker every time.
    let mut h = std::hash::DefaultHasher::new();
    match install {
        Install::Conn { new, .. } => new.key.hash(&mut h),
        Install::Template { key, .. } => key.hash(&mut h),
    }
    (h.finish() % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use xvs_conntrack::{Addr, DestId, Endpoint, FlowRef, Listed, Protocol, TcpState};
    use xvs_sync::SyncConn;
    use xvs_sync::wire::flags;

    use super::{Install, Reject, to_install, to_wire};
    use crate::service::snapshot::{Snapshot, SnapshotBuilder};
    use crate::service::spec::{
        DestSpec, ForwardMethod, PersistenceSpec, Protocol as P, ServiceAddr, ServiceSpec,
        ServiceTableSpec,
    };

    const V4: ServiceAddr = ServiceAddr::Inet {
        protocol: P::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        port: 80,
    };
    const V6: ServiceAddr = ServiceAddr::Inet {
        protocol: P::Udp,
        addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        port: 53,
    };
    const MARK: ServiceAddr = ServiceAddr::Fwmark {
        mark: 7,
        ipv6: false,
    };

    /// A persistent service of each kind, one real server each (the fwmark one on port 0).
    fn snapshot() -> Snapshot {
        let mut table = ServiceTableSpec::default();
        for (addr, prefix_len, rip, port, method) in [
            (
                V4,
                24,
                IpAddr::from([10, 0, 0, 2]),
                80,
                ForwardMethod::Route,
            ),
            (
                V6,
                64,
                "2001:db8:1::2".parse().unwrap(),
                53,
                ForwardMethod::Masq,
            ),
            (
                MARK,
                32,
                IpAddr::from([10, 0, 0, 3]),
                0,
                ForwardMethod::Tunnel,
            ),
        ] {
            let mut spec = ServiceSpec::new(addr);
            spec.persistence = Some(PersistenceSpec {
                timeout_secs: 300,
                prefix_len,
            });
            table.add_service(spec).unwrap();
            let dest = DestSpec {
                addr: rip,
                port,
                method,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            table.add_dest(&addr, dest).unwrap();
        }
        SnapshotBuilder::new().build(&table).unwrap()
    }

    fn dest_of(snapshot: &Snapshot, service: usize) -> DestId {
        snapshot.services[service].dests[0].id
    }

    fn ep(addr: &str, port: u16) -> Endpoint {
        Endpoint::new(Addr::from(addr.parse::<IpAddr>().unwrap()), port)
    }

    fn listed(dest: DestId, proto: Option<Protocol>, eps: [Endpoint; 3], template: bool) -> Listed {
        Listed {
            flow: FlowRef {
                shard: 0,
                slot: 0,
                generation: 0,
            },
            template,
            proto,
            client: eps[0],
            vip: eps[1],
            dest_addr: eps[2],
            dest,
            state: if template {
                TcpState::None
            } else if proto == Some(Protocol::Tcp) {
                TcpState::Established
            } else {
                TcpState::None
            },
            expires: 1090,
            active: true,
            no_output: false,
            synced: false,
        }
    }

    /// `entry` sent and received: what the master sends, and what the backup installs of it.
    fn round_trip(snapshot: &Snapshot, entry: &Listed) -> (SyncConn, Install) {
        let conn = to_wire(entry, snapshot, 1000).expect("sent");
        assert_eq!(conn.timeout, 90);
        let install = to_install(&conn, snapshot).expect("installed");
        (conn, install)
    }

    fn assert_conn(install: Install, entry: &Listed, snapshot: &Snapshot) {
        let Install::Conn {
            new,
            state,
            timeout,
        } = install
        else {
            panic!("not a connection: {install:?}");
        };
        assert_eq!(new.key.src, entry.client);
        assert_eq!(new.key.dst, entry.vip);
        assert_eq!(new.key.proto, entry.proto.unwrap());
        assert_eq!(new.dest, entry.dest);
        assert_eq!(new.dest_addr, entry.dest_addr);
        assert_eq!(new.template, None);
        assert_eq!(state, entry.state);
        assert_eq!(timeout, 90);
        assert!(snapshot.dest(new.dest).is_some());
    }

    fn assert_template(install: Install, entry: &Listed, snapshot: &Snapshot, service: usize) {
        let Install::Template {
            key,
            dest,
            dest_addr,
            timeout,
        } = install
        else {
            panic!("not a template: {install:?}");
        };
        let s = &snapshot.services[service];
        let mask = s.persistence.unwrap().mask;
        assert_eq!(
            key,
            xvs_conntrack::TemplateKey::new(&s.key, entry.client.addr, mask)
        );
        assert_eq!(dest, entry.dest);
        assert_eq!(dest_addr, entry.dest_addr);
        assert_eq!(timeout, 90);
    }

    #[test]
    fn ipv4_connections_and_templates_round_trip() {
        let snapshot = snapshot();
        let dest = dest_of(&snapshot, 0);
        let eps = [
            ep("198.51.100.7", 40000),
            ep("192.0.2.1", 80),
            ep("10.0.0.2", 80),
        ];
        let conn = listed(dest, Some(Protocol::Tcp), eps, false);
        let (wire, install) = round_trip(&snapshot, &conn);
        assert_eq!(
            (wire.protocol, wire.fwmark, wire.flags),
            (6, 0, flags::DROUTE)
        );
        assert_eq!(wire.state, TcpState::Established as u16);
        assert_conn(install, &conn, &snapshot);

        let eps = [
            ep("198.51.100.0", 0),
            ep("192.0.2.1", 80),
            ep("10.0.0.2", 80),
        ];
        let template = listed(dest, Some(Protocol::Tcp), eps, true);
        let (wire, install) = round_trip(&snapshot, &template);
        assert!(wire.is_template());
        assert_eq!((wire.protocol, wire.fwmark, wire.vport), (6, 0, 80));
        assert_template(install, &template, &snapshot, 0);
    }

    /// A connection to a TUN real server of the other family has no sync entry (one family
    /// for its three addresses): the master keeps it to itself, as IPVS does.
    #[test]
    fn mixed_family_connections_are_not_sent() {
        let snapshot = snapshot();
        let eps = [
            ep("198.51.100.7", 40000),
            ep("192.0.2.1", 80),
            ep("2001:db8::2", 80),
        ];
        let conn = listed(dest_of(&snapshot, 0), Some(Protocol::Tcp), eps, false);
        assert_eq!(to_wire(&conn, &snapshot, 1000), None);
    }

    #[test]
    fn ipv6_connections_and_templates_round_trip() {
        let snapshot = snapshot();
        let dest = dest_of(&snapshot, 1);
        let eps = [
            ep("2001:db8:9::7", 5353),
            ep("2001:db8::1", 53),
            ep("2001:db8:1::2", 53),
        ];
        let conn = listed(dest, Some(Protocol::Udp), eps, false);
        let (wire, install) = round_trip(&snapshot, &conn);
        assert_eq!(
            (wire.protocol, wire.fwmark, wire.flags),
            (17, 0, flags::MASQ)
        );
        assert_eq!(wire.caddr, "2001:db8:9::7".parse::<IpAddr>().unwrap());
        assert_eq!(wire.daddr, "2001:db8:1::2".parse::<IpAddr>().unwrap());
        assert_conn(install, &conn, &snapshot);

        // The /64 template: every client of 2001:db8:9::/64 finds it.
        let eps = [
            ep("2001:db8:9::", 0),
            ep("2001:db8::1", 53),
            ep("2001:db8:1::2", 53),
        ];
        let template = listed(dest, Some(Protocol::Udp), eps, true);
        let (wire, install) = round_trip(&snapshot, &template);
        assert!(wire.is_template() && wire.vaddr.is_ipv6());
        assert_template(install, &template, &snapshot, 1);
        let Install::Template { key, .. } = install else {
            unreachable!()
        };
        assert_eq!(
            key.client_net(),
            Addr::from("2001:db8:9::".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn fwmark_connections_carry_the_mark_and_templates_are_ipproto_ip() {
        let snapshot = snapshot();
        let dest = dest_of(&snapshot, 2);
        // A port-0 real server: the connection goes to the client's port, 443.
        let eps = [
            ep("198.51.100.7", 40000),
            ep("203.0.113.9", 443),
            ep("10.0.0.3", 443),
        ];
        let conn = listed(dest, Some(Protocol::Tcp), eps, false);
        let (wire, install) = round_trip(&snapshot, &conn);
        assert_eq!(
            (wire.protocol, wire.fwmark, wire.flags),
            (6, 7, flags::TUNNEL)
        );
        assert_eq!(wire.vaddr, IpAddr::from([203, 0, 113, 9]));
        assert_conn(install, &conn, &snapshot);

        // As ip_vs_sched_persist keys it: IPPROTO_IP, the mark as the address, port 0.
        let mark = Endpoint::new(Addr::v4(7u32.to_be_bytes()), 0);
        let eps = [ep("198.51.100.7", 0), mark, ep("10.0.0.3", 0)];
        let template = listed(dest, None, eps, true);
        let (wire, install) = round_trip(&snapshot, &template);
        assert_eq!((wire.protocol, wire.fwmark, wire.vport), (0, 7, 0));
        assert_eq!(wire.vaddr, IpAddr::from([0, 0, 0, 7]));
        assert_eq!(
            wire.flags,
            flags::TUNNEL | flags::TEMPLATE | flags::INACTIVE | flags::NOOUTPUT
        );
        assert_template(install, &template, &snapshot, 2);
    }

    /// A wire entry to `vaddr:vport` of `daddr:dport`, as a master sends one.
    fn entry(protocol: u8, vaddr: &str, vport: u16, daddr: &str, dport: u16) -> SyncConn {
        SyncConn {
            protocol,
            flags: flags::DROUTE,
            state: TcpState::Established as u16,
            cport: 40000,
            vport,
            dport,
            fwmark: 0,
            timeout: 60,
            caddr: "198.51.100.7".parse().unwrap(),
            vaddr: vaddr.parse().unwrap(),
            daddr: daddr.parse().unwrap(),
            seq: None,
            pe: None,
        }
    }

    #[test]
    fn the_backup_refuses_what_it_cannot_serve_as_the_master_did() {
        let snapshot = snapshot();
        let good = entry(6, "192.0.2.1", 80, "10.0.0.2", 80);
        assert!(to_install(&good, &snapshot).is_ok());
        let refused = |conn: SyncConn| to_install(&conn, &snapshot).unwrap_err();

        assert_eq!(
            refused(SyncConn {
                vport: 81,
                ..good.clone()
            }),
            Reject::NoService
        );
        assert_eq!(
            refused(SyncConn {
                protocol: 17,
                ..good.clone()
            }),
            Reject::NoService
        );
        assert_eq!(
            refused(SyncConn {
                protocol: 1,
                ..good.clone()
            }),
            Reject::UnsupportedEntry
        );
        let other_rip = "10.0.0.9".parse().unwrap();
        assert_eq!(
            refused(SyncConn {
                daddr: other_rip,
                ..good.clone()
            }),
            Reject::NoDest
        );
        assert_eq!(
            refused(SyncConn {
                dport: 8080,
                ..good.clone()
            }),
            Reject::NoDest
        );
        assert_eq!(
            refused(SyncConn {
                flags: flags::MASQ,
                ..good.clone()
            }),
            Reject::MethodMismatch
        );
        assert_eq!(
            refused(SyncConn {
                seq: Some(Default::default()),
                ..good.clone()
            }),
            Reject::Unsupported
        );
        assert_eq!(
            refused(SyncConn {
                state: 99,
                ..good.clone()
            }),
            Reject::UnsupportedEntry
        );

        // Marks: no service of mark 8, none of mark 7 for IPv6, and a template without a
        // protocol or mark.
        let marked = SyncConn {
            fwmark: 7,
            flags: flags::TUNNEL,
            ..entry(6, "203.0.113.9", 443, "10.0.0.3", 443)
        };
        assert!(to_install(&marked, &snapshot).is_ok());
        assert_eq!(
            refused(SyncConn {
                fwmark: 8,
                ..marked.clone()
            }),
            Reject::NoService
        );
        // A mark without its service falls back to the address service, as in IPVS.
        let fallback = SyncConn {
            fwmark: 8,
            ..good.clone()
        };
        assert!(to_install(&fallback, &snapshot).is_ok());
        let v6 = SyncConn {
            caddr: "2001:db8:9::7".parse().unwrap(),
            vaddr: "2001:db8::1".parse().unwrap(),
            daddr: "2001:db8:1::2".parse().unwrap(),
            ..marked.clone()
        };
        assert_eq!(refused(v6.clone()), Reject::NoService);
        let v6_template = SyncConn {
            protocol: 0,
            flags: flags::TUNNEL | flags::TEMPLATE,
            ..v6
        };
        assert_eq!(refused(v6_template), Reject::NoService);
        let template = SyncConn {
            protocol: 0,
            flags: flags::TUNNEL | flags::TEMPLATE,
            ..marked.clone()
        };
        assert!(to_install(&template, &snapshot).is_ok());
        assert_eq!(
            refused(SyncConn {
                fwmark: 0,
                ..template.clone()
            }),
            Reject::UnsupportedEntry
        );
        // A connection (not a template) must name its protocol, marked or not.
        assert_eq!(
            refused(SyncConn {
                flags: flags::TUNNEL,
                ..template.clone()
            }),
            Reject::UnsupportedEntry
        );

        // A template of a service that is not persistent here.
        let mut table = ServiceTableSpec::default();
        table.add_service(ServiceSpec::new(V4)).unwrap();
        let dest = DestSpec {
            addr: IpAddr::from([10, 0, 0, 2]),
            port: 80,
            method: ForwardMethod::Route,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        table.add_dest(&V4, dest).unwrap();
        let plain = SnapshotBuilder::new().build(&table).unwrap();
        let template = SyncConn {
            flags: flags::DROUTE | flags::TEMPLATE,
            ..good.clone()
        };
        assert_eq!(to_install(&template, &plain), Err(Reject::NotPersistent));
    }
}
