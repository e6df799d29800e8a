//! Between the connection table's entries and IPVS's sync entries, against the service table.
//!
//! The master describes an entry by addresses and ports ([`to_wire`]); the backup finds the
//! same virtual service and real server in its own table ([`to_install`]) and refuses what it
//! cannot serve exactly as the master did: an unknown service or real server, another
//! forwarding method (xvs connections follow their real server's method, so a mismatch would
//! send the flow another way), IPv6, firewall marks, and the sequence adjustment and
//! persistence-engine data xvs does not implement.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use xvs_conntrack::{
    Addr, Endpoint, FlowKey, Listed, NewConn, Protocol, ReturnPath, Secs, TcpState, TemplateKey,
};
use xvs_sync::SyncConn;
use xvs_sync::wire::flags;

use super::{Install, Reject};
use crate::service::snapshot::{Snapshot, ip_protocol};
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
    let (_, dest, _) = snapshot.dest(entry.dest)?;
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
    let protocol = match entry.proto? {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmp => return None,
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
        fwmark: 0,
        timeout: entry.expires.saturating_sub(now).max(1),
        caddr: entry.client.addr.to_ip(),
        vaddr: entry.vip.addr.to_ip(),
        daddr: entry.dest_addr.addr.to_ip(),
        seq: None,
        pe: None,
    })
}

fn v4(addr: IpAddr) -> Result<[u8; 4], Reject> {
    match addr {
        IpAddr::V4(a) => Ok(a.octets()),
        IpAddr::V6(_) => Err(Reject::Ipv6),
    }
}

/// What the backup installs for a received entry, checked against its own services.
pub fn to_install(conn: &SyncConn, snapshot: &Snapshot) -> Result<Install, Reject> {
    let (caddr, vaddr, daddr) = (v4(conn.caddr)?, v4(conn.vaddr)?, v4(conn.daddr)?);
    if conn.fwmark != 0 || (conn.is_template() && conn.protocol == 0) {
        return Err(Reject::Fwmark);
    }
    if conn.seq.is_some() || conn.pe.is_some() {
        return Err(Reject::Unsupported);
    }
    let (proto, service_proto) = match conn.protocol {
        6 => (Protocol::Tcp, ServiceProtocol::Tcp),
        17 => (Protocol::Udp, ServiceProtocol::Udp),
        _ => return Err(Reject::UnsupportedEntry),
    };
    let index = snapshot
        .classify(ip_protocol(service_proto), vaddr.into(), conn.vport)
        .ok_or(Reject::NoService)?;
    let service = &snapshot.services[index];
    let rip = IpAddr::from(daddr);
    let dest = service
        .dests
        .iter()
        .find(|d| d.spec.addr == rip && (d.spec.port == conn.dport || d.spec.port == 0))
        .ok_or(Reject::NoDest)?;
    if conn.flags & flags::FWD_MASK != method_flag(dest.spec.method) {
        return Err(Reject::MethodMismatch);
    }
    let dest_addr = Endpoint::new(Addr::v4(daddr), conn.dport);
    let timeout = conn.timeout.max(1);
    if conn.is_template() {
        let persistence = service.persistence.ok_or(Reject::NotPersistent)?;
        return Ok(Install::Template {
            key: TemplateKey::new(&service.key, Addr::v4(caddr), persistence.mask),
            dest: dest.id,
            dest_addr,
            timeout,
        });
    }
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
                Endpoint::new(Addr::v4(caddr), conn.cport),
                Endpoint::new(Addr::v4(vaddr), conn.vport),
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
