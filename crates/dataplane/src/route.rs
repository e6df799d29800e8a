//! Where a packet leaves, and the MAC address it goes to.
//!
//! The director's links are few (one for a one-arm director, two for a two-arm one), so the
//! route lookup is a walk over each link's on-link networks and then its default gateway,
//! like the kernel's connected and default routes. MAC addresses come from a [`Neighbours`]
//! snapshot that the side thread fills from the kernel's neighbour table; a miss is dropped
//! by the worker, counted, and queued for resolution.

use std::net::Ipv4Addr;

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
}

/// Resolved neighbours: (port, IPv4) -> MAC. Immutable; the side thread publishes new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    macs: HashMap<(u8, Ipv4Addr), [u8; 6]>,
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

    /// How many neighbours are known.
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
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
                },
                Link {
                    port: 1,
                    name: "int".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    mtu: 1500,
                    nets: vec![(Ipv4Addr::new(10, 0, 0, 1), 24)],
                    gateway: None,
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
}
