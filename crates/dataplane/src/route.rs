//! Where a packet leaves, and the MAC address it goes to.
//!
//! The director's links are few (one for a one-arm director, two for a two-arm one), so the
//! route lookup is a walk over each link's on-link networks and then its default gateway,
//! like the kernel's connected and default routes. MAC addresses come from a [`Neighbours`]
//! snapshot that the side thread fills from the kernel's neighbour table; a miss is dropped
//! by the worker, counted, and queued for resolution.
//!
//! IPv6 sits beside IPv4 in the same structures (each link's IPv6 networks and default
//! gateway, IPv6 neighbours), and [`HopAddr`] lets the pipeline's egress code serve both
//! families with one generic body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

/// One interface of the director, as the data path uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Index of the port (frame I/O) this link is: 0 for the external or only interface.
    pub port: u8,
    /// Interface name, for logs.
    pub name: String,
    /// The interface's MAC: the source of every frame sent on it.
    pub mac: [u8; 6],
    /// IP MTU.
    pub mtu: u16,
    /// On-link IPv4 networks (address, prefix length) configured on the interface.
    pub nets: Vec<(Ipv4Addr, u8)>,
    /// Default gateway reachable through this link, if any.
    pub gateway: Option<Ipv4Addr>,
    /// On-link IPv6 networks (address, prefix length) configured on the interface.
    pub nets6: Vec<(Ipv6Addr, u8)>,
    /// IPv6 default gateway reachable through this link, if any.
    pub gateway6: Option<Ipv6Addr>,
}

impl Link {
    /// The interface's first IPv4 address (source of the director's own ICMP and tunnels).
    pub fn primary_addr(&self) -> Option<Ipv4Addr> {
        self.nets.first().map(|&(addr, _)| addr)
    }

    /// The address this link sends from toward `dst`: the one whose network holds `dst`
    /// (or its gateway), else the first one.
    pub fn source_toward(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let hop = if self.on_link(dst) {
            dst
        } else {
            self.gateway.unwrap_or(dst)
        };
        self.nets
            .iter()
            .find(|&&(net, len)| len < 32 && same_net(net, hop, len))
            .map(|&(addr, _)| addr)
            .or_else(|| self.primary_addr())
    }

    fn on_link(&self, dst: Ipv4Addr) -> bool {
        self.nets.iter().any(|&(net, len)| same_net(net, dst, len))
    }

    /// [`source_toward`](Self::source_toward) for IPv6: the address whose network holds
    /// `dst` (or the gateway), else the first global one, else the first one.
    pub fn source_toward6(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        let hop = if self.on_link6(dst) {
            dst
        } else {
            self.gateway6.unwrap_or(dst)
        };
        self.nets6
            .iter()
            .find(|&&(net, len)| {
                len < 128 && same_net6(net, hop, len) && !net.is_unicast_link_local()
            })
            .or_else(|| self.nets6.iter().find(|(a, _)| !a.is_unicast_link_local()))
            .or_else(|| self.nets6.first())
            .map(|&(addr, _)| addr)
    }

    fn on_link6(&self, dst: Ipv6Addr) -> bool {
        self.nets6
            .iter()
            .any(|&(net, len)| same_net6(net, dst, len))
    }
}

/// Whether `a` and `b` share their first `len` bits (IPv6).
fn same_net6(a: Ipv6Addr, b: Ipv6Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    a.to_bits() & mask == b.to_bits() & mask
}

/// Whether `a` and `b` share their first `len` bits.
fn same_net(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

/// The director's links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Links in port order.
    pub links: Vec<Link>,
}

impl Routes {
    /// Whether `addr` is the director's own (a loopback address or one of its links'): a
    /// real server there is IPVS's `Local`.
    pub fn is_own(&self, addr: Ipv4Addr) -> bool {
        crate::local::is_local(
            addr,
            self.links
                .iter()
                .flat_map(|l| l.nets.iter().map(|&(a, _)| a)),
        )
    }

    /// `(port, next hop)` toward `dst`: the first link with `dst` on-link, else the first link
    /// with a default gateway.
    #[inline]
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<(u8, Ipv4Addr)> {
        if let Some(link) = self.links.iter().find(|l| l.on_link(dst)) {
            return Some((link.port, dst));
        }
        self.links
            .iter()
            .find_map(|l| l.gateway.map(|gw| (l.port, gw)))
    }

    /// The link of `port`.
    #[inline]
    pub fn link(&self, port: u8) -> Option<&Link> {
        self.links.get(usize::from(port))
    }

    /// [`is_own`](Self::is_own) for IPv6: `::1` or an address of one of the links.
    pub fn is_own6(&self, addr: Ipv6Addr) -> bool {
        addr.is_loopback()
            || self
                .links
                .iter()
                .any(|l| l.nets6.iter().any(|&(a, _)| a == addr))
    }

    /// [`next_hop`](Self::next_hop) for IPv6.
    #[inline]
    pub fn next_hop6(&self, dst: Ipv6Addr) -> Option<(u8, Ipv6Addr)> {
        if let Some(link) = self.links.iter().find(|l| l.on_link6(dst)) {
            return Some((link.port, dst));
        }
        self.links
            .iter()
            .find_map(|l| l.gateway6.map(|gw| (l.port, gw)))
    }
}

/// An address family the egress code routes: IPv4 or IPv6, each with its own networks,
/// gateway and neighbours, behind one interface so the pipeline's egress is written once.
pub trait HopAddr: Copy + Into<IpAddr> {
    /// Whether the address is the director's own.
    fn is_own(self, routes: &Routes) -> bool;
    /// `(port, next hop)` toward the address.
    fn next_hop(self, routes: &Routes) -> Option<(u8, Self)>;
    /// The address `link` sends from toward this one.
    fn source_on(self, link: &Link) -> Option<Self>;
    /// The resolved MAC of this next hop on `port`.
    fn neighbour(self, neighbours: &Neighbours, port: u8) -> Option<[u8; 6]>;
}

impl HopAddr for Ipv4Addr {
    #[inline]
    fn is_own(self, routes: &Routes) -> bool {
        routes.is_own(self)
    }
    #[inline]
    fn next_hop(self, routes: &Routes) -> Option<(u8, Self)> {
        routes.next_hop(self)
    }
    #[inline]
    fn source_on(self, link: &Link) -> Option<Self> {
        link.source_toward(self)
    }
    #[inline]
    fn neighbour(self, neighbours: &Neighbours, port: u8) -> Option<[u8; 6]> {
        neighbours.get(port, self)
    }
}

impl HopAddr for Ipv6Addr {
    #[inline]
    fn is_own(self, routes: &Routes) -> bool {
        routes.is_own6(self)
    }
    #[inline]
    fn next_hop(self, routes: &Routes) -> Option<(u8, Self)> {
        routes.next_hop6(self)
    }
    #[inline]
    fn source_on(self, link: &Link) -> Option<Self> {
        link.source_toward6(self)
    }
    #[inline]
    fn neighbour(self, neighbours: &Neighbours, port: u8) -> Option<[u8; 6]> {
        neighbours.get6(port, self)
    }
}

/// Resolved neighbours: (port, IPv4) -> MAC. Immutable; the side thread publishes new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    macs: HashMap<(u8, Ipv4Addr), [u8; 6]>,
    macs6: HashMap<(u8, Ipv6Addr), [u8; 6]>,
}

impl Neighbours {
    /// An empty table.
    pub fn new() -> Self {
        Neighbours::default()
    }

    /// Records `ip`'s MAC on `port`.
    pub fn insert(&mut self, port: u8, ip: Ipv4Addr, mac: [u8; 6]) {
        self.macs.insert((port, ip), mac);
    }

    /// The MAC of `ip` on `port`.
    #[inline]
    pub fn get(&self, port: u8, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.macs.get(&(port, ip)).copied()
    }

    /// Records IPv6 neighbour `ip`'s MAC on `port`.
    pub fn insert6(&mut self, port: u8, ip: Ipv6Addr, mac: [u8; 6]) {
        self.macs6.insert((port, ip), mac);
    }

    /// The MAC of IPv6 neighbour `ip` on `port`.
    #[inline]
    pub fn get6(&self, port: u8, ip: Ipv6Addr) -> Option<[u8; 6]> {
        self.macs6.get(&(port, ip)).copied()
    }

    /// How many neighbours are known (both families).
    pub fn len(&self) -> usize {
        self.macs.len() + self.macs6.len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty() && self.macs6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_arm() -> Routes {
        Routes {
            links: vec![
                Link {
                    port: 0,
                    name: "ext".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    mtu: 1500,
                    nets: vec![(Ipv4Addr::new(192, 0, 2, 10), 24)],
                    gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    nets6: vec![
                        ("fe80::1".parse().unwrap(), 64),
                        ("2001:db8::a".parse().unwrap(), 64),
                    ],
                    gateway6: Some("2001:db8::1".parse().unwrap()),
                },
                Link {
                    port: 1,
                    name: "int".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    mtu: 1500,
                    nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
                    gateway: None,
                    nets6: vec![("fd00::1".parse().unwrap(), 64)],
                    gateway6: None,
                },
            ],
        }
    }

    #[test]
    fn on_link_first_then_default_gateway() {
        let r = two_arm();
        assert_eq!(
            r.next_hop(Ipv4Addr::new(10, 0, 0, 7)),
            Some((1, Ipv4Addr::new(10, 0, 0, 7)))
        );
        assert_eq!(
            r.next_hop(Ipv4Addr::new(192, 0, 2, 99)),
            Some((0, Ipv4Addr::new(192, 0, 2, 99)))
        );
        assert_eq!(
            r.next_hop(Ipv4Addr::new(203, 0, 113, 5)),
            Some((0, Ipv4Addr::new(192, 0, 2, 1)))
        );
        let mut isolated = two_arm();
        isolated.links[0].gateway = None;
        assert_eq!(isolated.next_hop(Ipv4Addr::new(203, 0, 113, 5)), None);
        assert_eq!(
            r.link(1).unwrap().primary_addr(),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn ipv6_on_link_first_then_default_gateway_and_global_sources() {
        let r = two_arm();
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(r.next_hop6(ip("fd00::7")), Some((1, ip("fd00::7"))));
        assert_eq!(
            r.next_hop6(ip("2001:db8::99")),
            Some((0, ip("2001:db8::99")))
        );
        assert_eq!(
            r.next_hop6(ip("2001:db8:5::5")),
            Some((0, ip("2001:db8::1")))
        );
        assert_eq!(r.next_hop6(ip("fe80::5")), Some((0, ip("fe80::5"))));
        let mut isolated = two_arm();
        isolated.links[0].gateway6 = None;
        assert_eq!(isolated.next_hop6(ip("2001:db8:5::5")), None);
        // The global address, not the link-local one, sources tunnels.
        let ext = r.link(0).unwrap();
        assert_eq!(
            ext.source_toward6(ip("2001:db8::99")),
            Some(ip("2001:db8::a"))
        );
        assert_eq!(
            ext.source_toward6(ip("2001:db8:7::1")),
            Some(ip("2001:db8::a"))
        );
        assert!(r.is_own6(ip("fd00::1")) && r.is_own6(Ipv6Addr::LOCALHOST));
        assert!(!r.is_own6(ip("fd00::2")));
        let mut n = Neighbours::new();
        n.insert6(1, ip("fd00::7"), [2, 0, 0, 0, 0, 7]);
        assert_eq!(n.get6(1, ip("fd00::7")), Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(n.get6(0, ip("fd00::7")), None);
        assert_eq!(n.get(1, Ipv4Addr::new(0, 0, 0, 0)), None);
        assert_eq!(n.len(), 1);
    }
}
