//! The configured virtual services: what `xvsadm` edits and the config file describes.
//!
//! This is the control plane's desired state, in the terms of ipvsadm: services keyed by
//! `-t/-u addr:port` or `-f mark`, each with a scheduler, persistence and real servers with a
//! forwarding method and weight. Edits follow IPVS's rules and fail with ipvsadm's messages,
//! and a failed edit changes nothing. The dataplane compiles this into the snapshot its
//! workers read; this crate knows nothing of packets.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::protocol::Protocol;
use crate::scheduler::{self, DEFAULT_MH_TABLE_SIZE, SchedFlags, SchedOptions};

/// ipvsadm's default persistence timeout (`-p` without a value), seconds.
pub const DEFAULT_PERSISTENCE_SECS: u32 = 300;

/// The highest weight ipvsadm accepts (`-w 0..65535`).
pub const MAX_WEIGHT: u32 = 65_535;

/// How a virtual service is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAddr {
    /// `-t vip:port` or `-u vip:port`.
    Inet {
        /// TCP or UDP.
        #[serde(deserialize_with = "service_protocol")]
        protocol: Protocol,
        /// The virtual IP.
        addr: IpAddr,
        /// The virtual port; 0 with persistence means every port.
        port: u16,
    },
    /// `-f mark`: packets the firewall marked, any protocol, IPv4 unless `ipv6`.
    Fwmark {
        /// The firewall mark.
        mark: u32,
        /// `-6`: the mark groups IPv6 traffic.
        ipv6: bool,
    },
}

impl fmt::Display for ServiceAddr {
    /// ipvsadm's `-n` spelling: `TCP  192.0.2.1:80`, `[2001:db8::1]:80`, `FWM  7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAddr::Inet {
                protocol,
                addr,
                port,
            } => {
                write!(f, "{}  {}", protocol.label(), SocketText(*addr, *port))
            }
            ServiceAddr::Fwmark { mark, .. } => write!(f, "FWM  {mark}"),
        }
    }
}

/// A service's protocol as the config file and the control protocol give it: `tcp` or
/// `udp`, refused otherwise with serde's own words for an unknown variant.
fn service_protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    const SERVICE_PROTOCOLS: &[&str] = &["tcp", "udp"];
    match Protocol::deserialize(d)? {
        Protocol::Icmp => Err(serde::de::Error::unknown_variant("icmp", SERVICE_PROTOCOLS)),
        p => Ok(p),
    }
}

/// `addr:port` with IPv6 addresses in brackets, as ipvsadm prints them.
pub struct SocketText(pub IpAddr, pub u16);

impl fmt::Display for SocketText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// LVS's three forwarding methods (ipvsadm's words for them are the CLI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// `-g`, direct routing: rewrite the MAC; the real server answers the client directly.
    Route,
    /// `-i`, IP-in-IP tunnelling to a real server that may be on another network.
    Tunnel,
    /// `-m`, NAT ("masquerading"): rewrite the destination; replies come back through xvs.
    Masq,
}

/// `-p [timeout] [-M netmask]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistenceSpec {
    /// Seconds a template outlives the last connection it controls.
    pub timeout_secs: u32,
    /// Prefix length of the client netmask (`-M 255.255.255.0` is 24); IPv6 services give a
    /// prefix length directly. 32 (IPv4) or 128 (IPv6) groups by single client address.
    pub prefix_len: u8,
}

/// One real server of a service (`-a/-e -r addr:port -g|-i|-m -w W -x U -y L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSpec {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port; DR and TUN use the virtual port.
    pub port: u16,
    /// How packets reach it.
    pub method: ForwardMethod,
    /// 0..=65535; 0 quiesces.
    pub weight: u32,
    /// `-x`, 0 = none.
    pub upper_threshold: u32,
    /// `-y`, 0 = none.
    pub lower_threshold: u32,
}

/// One virtual service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `-t/-u/-f`.
    pub addr: ServiceAddr,
    /// `-s`, an ipvsadm scheduler name.
    pub scheduler: String,
    /// `-b`.
    pub flags: SchedFlags,
    /// `-p`, absent when the service is not persistent.
    pub persistence: Option<PersistenceSpec>,
    /// `-o`: one-packet scheduling (each UDP datagram scheduled on its own).
    pub one_packet: bool,
    /// Maglev table size for `-s mh`.
    pub mh_table_size: u32,
    /// IPVS's `sloppy_tcp` for this service alone (the global switch is the connection
    /// table's option): a mid-flow TCP packet of an unknown flow is scheduled instead of
    /// dropped. Set from the config file; ipvsadm has no option for it, so `-E` keeps it.
    #[serde(default)]
    pub sloppy_tcp: bool,
    /// Real servers in the order they were added (schedulers walk this order).
    pub dests: Vec<DestSpec>,
}

impl ServiceSpec {
    /// A service with ipvsadm's defaults: wlc, not persistent, no real servers.
    pub fn new(addr: ServiceAddr) -> Self {
        ServiceSpec {
            addr,
            scheduler: scheduler::DEFAULT_SCHEDULER.to_string(),
            flags: SchedFlags::default(),
            persistence: None,
            one_packet: false,
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            sloppy_tcp: false,
            dests: Vec::new(),
        }
    }

    /// The scheduler options these settings give (the seed is the worker's to set).
    pub fn sched_options(&self) -> SchedOptions {
        SchedOptions {
            flags: self.flags,
            mh_table_size: self.mh_table_size,
            ..Default::default()
        }
    }

    /// Whether the service is IPv6 (its VIP, or `-f mark -6`).
    pub fn is_ipv6(&self) -> bool {
        match self.addr {
            ServiceAddr::Inet { addr, .. } => addr.is_ipv6(),
            ServiceAddr::Fwmark { ipv6, .. } => ipv6,
        }
    }

    fn dest_index(&self, addr: IpAddr, port: u16) -> Option<usize> {
        self.dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
    }
}

/// Why an edit was refused. The texts are ipvsadm's, so scripts that match them still work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// `-A` of a service that exists.
    #[error("Service already exists")]
    ServiceExists,
    /// `-E/-D/-a/-e/-d` on a service that does not exist.
    #[error("No such service")]
    NoSuchService,
    /// `-a` of a real server the service has.
    #[error("Destination already exists")]
    DestExists,
    /// `-e/-d` of a real server the service does not have.
    #[error("No such destination")]
    NoSuchDest,
    /// The scheduler or its options are not valid.
    #[error("{0}")]
    Scheduler(#[from] crate::SchedError),
    /// A weight or threshold out of range, a port rule broken, an address family mixed.
    #[error("{0}")]
    Invalid(String),
}

/// All configured services, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTableSpec {
    /// The services.
    pub services: Vec<ServiceSpec>,
}

impl ServiceTableSpec {
    /// The service addressed by `addr`, if configured.
    pub fn service(&self, addr: &ServiceAddr) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.addr == *addr)
    }

    fn service_mut(&mut self, addr: &ServiceAddr) -> Result<&mut ServiceSpec, EditError> {
        self.services
            .iter_mut()
            .find(|s| s.addr == *addr)
            .ok_or(EditError::NoSuchService)
    }

    /// `-A`: adds a service (no real servers yet).
    pub fn add_service(&mut self, service: ServiceSpec) -> Result<(), EditError> {
        if self.service(&service.addr).is_some() {
            return Err(EditError::ServiceExists);
        }
        check_service(&service)?;
        for dest in &service.dests {
            check_dest(&service, dest)?;
        }
        self.services.push(service);
        Ok(())
    }

    /// `-E`: changes scheduler, flags, persistence and `-o`; real servers stay.
    pub fn edit_service(&mut self, edited: ServiceSpec) -> Result<(), EditError> {
        check_service(&edited)?;
        let service = self.service_mut(&edited.addr)?;
        service.scheduler = edited.scheduler;
        service.flags = edited.flags;
        service.persistence = edited.persistence;
        service.one_packet = edited.one_packet;
        service.mh_table_size = edited.mh_table_size;
        Ok(())
    }

    /// `-D`: removes a service and its real servers.
    pub fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), EditError> {
        let before = self.services.len();
        self.services.retain(|s| s.addr != *addr);
        if self.services.len() == before {
            return Err(EditError::NoSuchService);
        }
        Ok(())
    }

    /// `-C`: removes everything.
    pub fn clear(&mut self) {
        self.services.clear();
    }

    /// `-a`: adds a real server to a service.
    pub fn add_dest(&mut self, addr: &ServiceAddr, dest: DestSpec) -> Result<(), EditError> {
        let service = self.service_mut(addr)?;
        if service.dest_index(dest.addr, dest.port).is_some() {
            return Err(EditError::DestExists);
        }
        check_dest(service, &dest)?;
        service.dests.push(dest);
        Ok(())
    }

    /// `-e`: changes a real server's method, weight and thresholds.
    pub fn edit_dest(&mut self, addr: &ServiceAddr, dest: DestSpec) -> Result<(), EditError> {
        let service = self.service_mut(addr)?;
        let index = service
            .dest_index(dest.addr, dest.port)
            .ok_or(EditError::NoSuchDest)?;
        check_dest(service, &dest)?;
        service.dests[index] = dest;
        Ok(())
    }

    /// `-d`: removes a real server.
    pub fn delete_dest(
        &mut self,
        addr: &ServiceAddr,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), EditError> {
        let service = self.service_mut(addr)?;
        let index = service.dest_index(ip, port).ok_or(EditError::NoSuchDest)?;
        service.dests.remove(index);
        Ok(())
    }
}

fn check_service(service: &ServiceSpec) -> Result<(), EditError> {
    if let ServiceAddr::Inet {
        protocol: Protocol::Icmp,
        ..
    } = service.addr
    {
        return Err(EditError::Invalid(
            "A virtual service is TCP (-t) or UDP (-u)".to_string(),
        ));
    }
    scheduler::validate(&service.scheduler, &service.sched_options())?;
    if let Some(p) = service.persistence {
        let max = if service.is_ipv6() { 128 } else { 32 };
        if p.prefix_len > max {
            return Err(EditError::Invalid(format!(
                "Illegal netmask: prefix /{} is longer than /{max}",
                p.prefix_len
            )));
        }
        if p.timeout_secs == 0 {
            return Err(EditError::Invalid(
                "Illegal persistence timeout: 0".to_string(),
            ));
        }
    }
    if let ServiceAddr::Inet { port: 0, .. } = service.addr
        && service.persistence.is_none()
    {
        return Err(EditError::Invalid(
            "Zero port specified for non-persistent service".to_string(),
        ));
    }
    Ok(())
}

fn check_dest(service: &ServiceSpec, dest: &DestSpec) -> Result<(), EditError> {
    if dest.weight > MAX_WEIGHT {
        return Err(EditError::Invalid(format!(
            "Illegal weight specified: {} (0..65535)",
            dest.weight
        )));
    }
    for (name, value) in [
        ("upper", dest.upper_threshold),
        ("lower", dest.lower_threshold),
    ] {
        if value > MAX_WEIGHT {
            return Err(EditError::Invalid(format!(
                "Illegal {name} threshold specified: {value} (0..65535)"
            )));
        }
    }
    if dest.upper_threshold != 0 && dest.lower_threshold > dest.upper_threshold {
        return Err(EditError::Invalid(
            "The lower threshold is above the upper threshold".to_string(),
        ));
    }
    // As IPVS: only a tunnel can carry a packet to a real server of the other family
    // (IPv4-in-IPv6, IPv6-in-IPv4); DR and NAT would need the real server to speak it.
    if dest.addr.is_ipv6() != service.is_ipv6() && dest.method != ForwardMethod::Tunnel {
        return Err(EditError::Invalid(
            "Different address family is allowed only for tunneling servers".to_string(),
        ));
    }
    // DR and TUN deliver the packet unchanged, so the real server sees the virtual port.
    if let ServiceAddr::Inet { port, .. } = service.addr
        && dest.method != ForwardMethod::Masq
        && port != 0
        && dest.port != port
    {
        return Err(EditError::Invalid(format!(
            "Port {} differs from the virtual port {port}: only NAT (-m) can map ports",
            dest.port
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn vip() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 100)),
            port: 80,
        }
    }

    fn dest(last: u8, method: ForwardMethod, port: u16) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
            method,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    #[test]
    fn edits_follow_ipvs_rules_and_messages() {
        let mut table = ServiceTableSpec::default();
        table.add_service(ServiceSpec::new(vip())).unwrap();
        assert_eq!(
            table.add_service(ServiceSpec::new(vip())),
            Err(EditError::ServiceExists)
        );
        table
            .add_dest(&vip(), dest(1, ForwardMethod::Route, 80))
            .unwrap();
        assert_eq!(
            table.add_dest(&vip(), dest(1, ForwardMethod::Route, 80)),
            Err(EditError::DestExists)
        );
        assert_eq!(
            table.edit_dest(&vip(), dest(9, ForwardMethod::Route, 80)),
            Err(EditError::NoSuchDest)
        );
        let mut heavier = dest(1, ForwardMethod::Route, 80);
        heavier.weight = 3;
        table.edit_dest(&vip(), heavier).unwrap();
        assert_eq!(table.service(&vip()).unwrap().dests[0].weight, 3);
        table.delete_dest(&vip(), heavier.addr, 80).unwrap();
        assert_eq!(
            table.delete_dest(&vip(), heavier.addr, 80),
            Err(EditError::NoSuchDest)
        );
        table.delete_service(&vip()).unwrap();
        assert_eq!(table.delete_service(&vip()), Err(EditError::NoSuchService));
        assert_eq!(EditError::NoSuchService.to_string(), "No such service");
    }

    #[test]
    fn failed_edits_change_nothing() {
        let mut table = ServiceTableSpec::default();
        table.add_service(ServiceSpec::new(vip())).unwrap();
        table
            .add_dest(&vip(), dest(1, ForwardMethod::Masq, 8080))
            .unwrap();
        let before = table.clone();
        let mut bad = ServiceSpec::new(vip());
        bad.scheduler = "fastest".into();
        assert!(table.edit_service(bad).is_err());
        assert!(
            table
                .add_dest(&vip(), dest(2, ForwardMethod::Route, 8080))
                .is_err()
        );
        let mut heavy = dest(3, ForwardMethod::Route, 80);
        heavy.weight = 70_000;
        assert!(table.add_dest(&vip(), heavy).is_err());
        assert_eq!(table, before);
    }

    #[test]
    fn a_service_is_tcp_or_udp() {
        let icmp = ServiceAddr::Inet {
            protocol: Protocol::Icmp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 100)),
            port: 80,
        };
        let mut table = ServiceTableSpec::default();
        assert!(matches!(
            table.add_service(ServiceSpec::new(icmp)),
            Err(EditError::Invalid(_))
        ));
        assert!(table.services.is_empty());
        // Deserialised, the refusal is in serde's words, as when the type had two variants.
        let text = serde_json::to_string(&icmp).unwrap();
        let err = serde_json::from_str::<ServiceAddr>(&text).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown variant `icmp`, expected `tcp` or `udp`"),
            "{err}"
        );
        let tcp = serde_json::to_string(&vip()).unwrap();
        assert_eq!(serde_json::from_str::<ServiceAddr>(&tcp).unwrap(), vip());
    }

    #[test]
    fn prints_services_as_ipvsadm_does() {
        assert_eq!(vip().to_string(), "TCP  192.168.0.100:80");
        let v6 = ServiceAddr::Inet {
            protocol: Protocol::Udp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 53,
        };
        assert_eq!(v6.to_string(), "UDP  [2001:db8::1]:53");
        assert_eq!(
            ServiceAddr::Fwmark {
                mark: 7,
                ipv6: false
            }
            .to_string(),
            "FWM  7"
        );
    }
}
