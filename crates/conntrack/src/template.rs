//! Persistence templates (`ipvsadm -p [timeout] -M netmask`).
//!
//! IPVS remembers "this client network went to that real server" as a connection *template*:
//! an entry in state NONE that is never matched by packets, only by the scheduler of a new
//! connection (ip_vs_core.c `ip_vs_sched_persist`). Its key is the client address masked by
//! the service netmask (client port 0), and:
//! - for a service with a port, `(protocol, client net, VIP, vport)`;
//! - for a port-0 service ("all ports"), `(protocol, client net, VIP, 0)`;
//! - for a firewall-mark service, `(IPPROTO_IP, client net, fwmark, 0)`.
//!
//! A template lives while connections it controls live (`n_control`), and counts in the real
//! server's PersistConn.

use crate::key::{Addr, Family, Protocol, ServiceKey};
use crate::timeouts::{DEFAULT_PERSISTENCE_TIMEOUT, Secs};

/// Persistence granularity: IPv4 takes a netmask (`-M 255.255.255.0`, any bit pattern),
/// IPv6 a prefix length (default 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersistenceMask(u128);

impl PersistenceMask {
    /// An IPv4 netmask as `ipvsadm -M` takes it.
    pub const fn v4(mask: [u8; 4]) -> Self {
        PersistenceMask(u32::from_be_bytes(mask) as u128)
    }

    /// An IPv4 mask from a prefix length (0..=32).
    pub const fn v4_prefix(len: u8) -> Self {
        let len = if len > 32 { 32 } else { len };
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - len as u32)
        };
        PersistenceMask(mask as u128)
    }

    /// An IPv6 prefix length (0..=128).
    pub const fn v6_prefix(len: u8) -> Self {
        let len = if len > 128 { 128 } else { len };
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len as u32)
        };
        PersistenceMask(mask)
    }

    /// IPVS defaults: 255.255.255.255 for IPv4, /128 for IPv6 (one template per client).
    pub const fn host(family: Family) -> Self {
        match family {
            Family::V4 => PersistenceMask::v4_prefix(32),
            Family::V6 => PersistenceMask::v6_prefix(128),
        }
    }

    #[inline]
    pub const fn bits(&self) -> u128 {
        self.0
    }
}

/// A persistent service's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Secs,
    pub mask: PersistenceMask,
}

impl Persistence {
    /// `-p` alone: 300 s, one template per client address.
    pub const fn default_for(family: Family) -> Self {
        Persistence {
            timeout: DEFAULT_PERSISTENCE_TIMEOUT,
            mask: PersistenceMask::host(family),
        }
    }
}

/// What a template is looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// `None` for a firewall-mark service (IPVS keys those templates with IPPROTO_IP).
    pub(crate) proto: Option<Protocol>,
    pub(crate) client_net: Addr,
    /// The VIP, or the firewall mark widened to an address for fwmark services.
    pub(crate) service_addr: Addr,
    pub(crate) vport: u16,
}

impl TemplateKey {
    /// The template key for a new connection from `client` to `service`.
    pub fn new(service: &ServiceKey, client: Addr, mask: PersistenceMask) -> Self {
        let client_net = client.masked(mask.bits());
        match *service {
            // Port 0 = all ports of the VIP: the template carries vport 0, so every port of
            // the VIP finds the same template.
            ServiceKey::Addr { proto, vip, port } => TemplateKey {
                proto: Some(proto),
                client_net,
                service_addr: vip,
                vport: port,
            },
            ServiceKey::Fwmark { mark, family } => TemplateKey {
                proto: None,
                client_net,
                service_addr: Addr::from_parts(mark as u128, family),
                vport: 0,
            },
        }
    }

    pub fn client_net(&self) -> Addr {
        self.client_net
    }
}
