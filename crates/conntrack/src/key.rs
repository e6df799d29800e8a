//! Flow keys: who talks to whom, for TCP, UDP and ICMP over IPv4 or IPv6.
//!
//! IPVS hashes a connection by (protocol, client address, client port) and matches the rest of
//! the tuple on lookup. xvs keeps the same two lookups:
//! - **inbound**: a packet from the client to the virtual service, `client -> VIP:vport`;
//! - **outbound**: NAT return traffic from the real server to the client, `RIP:rport -> client`.
//!
//! Addresses are stored as 128-bit values with their family, so IPv6 needs no new types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of a flow. IPv4 and IPv6 flows never match each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// An IPv4 or IPv6 address as one 128-bit value (IPv4 in the low 32 bits).
///
/// Stored as two 64-bit halves, low first: a `u128` field would align the whole key (and
/// every connection handed out) to 16 bytes and make them a third larger to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    halves: [u64; 2],
    family: Family,
}

const fn halves(bits: u128) -> [u64; 2] {
    [bits as u64, (bits >> 64) as u64]
}

impl Addr {
    #[inline]
    pub const fn v4(octets: [u8; 4]) -> Self {
        Addr {
            halves: [u32::from_be_bytes(octets) as u64, 0],
            family: Family::V4,
        }
    }

    #[inline]
    pub const fn v6(octets: [u8; 16]) -> Self {
        Addr {
            halves: halves(u128::from_be_bytes(octets)),
            family: Family::V6,
        }
    }

    /// Rebuilds an address from its stored form (used when reading entries back).
    #[inline]
    pub(crate) const fn from_parts(bits: u128, family: Family) -> Self {
        Addr {
            halves: halves(bits),
            family,
        }
    }

    #[inline]
    pub const fn bits(&self) -> u128 {
        self.halves[0] as u128 | (self.halves[1] as u128) << 64
    }

    #[inline]
    pub const fn family(&self) -> Family {
        self.family
    }

    /// The address with every bit outside `mask` cleared (persistence granularity).
    #[inline]
    pub const fn masked(&self, mask: u128) -> Self {
        Addr::from_parts(self.bits() & mask, self.family)
    }

    pub fn to_ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.halves[0] as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.bits())),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(a: Ipv4Addr) -> Self {
        Addr::v4(a.octets())
    }
}

impl From<Ipv6Addr> for Addr {
    fn from(a: Ipv6Addr) -> Self {
        Addr::v6(a.octets())
    }
}

impl From<[u8; 4]> for Addr {
    fn from(octets: [u8; 4]) -> Self {
        Addr::v4(octets)
    }
}

impl From<[u8; 16]> for Addr {
    fn from(octets: [u8; 16]) -> Self {
        Addr::v6(octets)
    }
}

impl From<IpAddr> for Addr {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => a.into(),
            IpAddr::V6(a) => a.into(),
        }
    }
}

/// Transport protocol of a flow: the model's (ICMP covers ICMPv6 too).
pub use xvs_model::Protocol;

/// An address and a port (for ICMP, the echo identifier or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: Addr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(addr: impl Into<Addr>, port: u16) -> Self {
        Endpoint {
            addr: addr.into(),
            port,
        }
    }
}

/// The tuple of one packet as it appears on the wire: source, destination and protocol.
///
/// For an inbound lookup the source is the client and the destination the virtual service;
/// for an outbound (NAT return) lookup the source is the real server and the destination the
/// client. The same type serves both, as in IPVS's `ip_vs_conn_param`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Protocol,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl FlowKey {
    pub fn new(proto: Protocol, src: Endpoint, dst: Endpoint) -> Self {
        FlowKey { proto, src, dst }
    }

    pub fn tcp(src: Endpoint, dst: Endpoint) -> Self {
        FlowKey::new(Protocol::Tcp, src, dst)
    }

    pub fn udp(src: Endpoint, dst: Endpoint) -> Self {
        FlowKey::new(Protocol::Udp, src, dst)
    }

    pub fn icmp(src: Endpoint, dst: Endpoint) -> Self {
        FlowKey::new(Protocol::Icmp, src, dst)
    }

    /// The same flow seen from the other end (swap source and destination).
    pub fn reversed(&self) -> Self {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }

    #[inline]
    pub fn family(&self) -> Family {
        self.src.addr.family()
    }
}

/// A virtual service: `(protocol, VIP, port)` or a firewall mark (`ipvsadm -f`).
///
/// Port 0 on an address service means "every port of the VIP" for persistence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    Addr {
        proto: Protocol,
        vip: Addr,
        port: u16,
    },
    Fwmark {
        mark: u32,
        family: Family,
    },
}

impl ServiceKey {
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { vip, .. } => vip.family(),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}
