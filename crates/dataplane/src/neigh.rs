//! MAC addresses of real servers and next hops, from the kernel's neighbour table.
//!
//! Choice: the kernel's table, not xvs's own ARP. The director's kernel already runs ARP on
//! these interfaces (ARP frames pass the XDP filter), keeps entries fresh, handles gratuitous
//! ARP and static entries an operator adds with `ip neigh`, and `ip neigh` shows what xvs
//! uses. xvs reads the table with an `RTM_GETNEIGH` dump and, for an address it does not know,
//! sends `RTM_NEWNEIGH` with `NTF_USE`: the kernel creates the entry if needed and starts
//! resolution (an ARP request) exactly as if it had a packet to send there. A later refresh
//! finds the answer. The worker drops (and counts) packets toward an unresolved neighbour and
//! queues the address; the side thread calls [`NeighbourCache::request`] and
//! [`NeighbourCache::refresh`] and publishes [`NeighbourCache::neighbours`].
//!
//! IPv6 the same way: the dump asks for every family and keeps IPv4 and IPv6 entries, and
//! `NTF_USE` on an IPv6 address makes the kernel send its neighbour solicitation (neighbour
//! discovery stays the kernel's: ND frames pass the XDP filter like ARP).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::netdev::Mac;
use crate::netlink::{Request, RouteSocket, attributes, flags, kind};
use crate::route::Neighbours;

const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;

/// Neighbour states (`NUD_*`).
pub mod state {
    /// Resolution in progress.
    pub const INCOMPLETE: u16 = 0x01;
    /// Confirmed recently.
    pub const REACHABLE: u16 = 0x02;
    /// Usable, to be confirmed on next use.
    pub const STALE: u16 = 0x04;
    /// Usable, confirmation pending.
    pub const DELAY: u16 = 0x08;
    /// Usable, being probed.
    pub const PROBE: u16 = 0x10;
    /// Resolution failed.
    pub const FAILED: u16 = 0x20;
    /// No ARP needed (point-to-point, loopback).
    pub const NOARP: u16 = 0x40;
    /// Configured by hand.
    pub const PERMANENT: u16 = 0x80;
    /// States whose MAC can be used to send.
    pub const USABLE: u16 = REACHABLE | STALE | DELAY | PROBE | NOARP | PERMANENT;
}

/// One IPv4 or IPv6 neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub ifindex: u32,
    /// The neighbour's address.
    pub addr: IpAddr,
    /// Its MAC, when the kernel has one.
    pub mac: Option<Mac>,
    /// `NUD_*` state bits, see [`state`].
    pub state: u16,
}

impl Neighbour {
    /// The MAC to send to, if the entry is in a usable state.
    pub fn usable_mac(&self) -> Option<Mac> {
        if self.state & state::USABLE != 0 {
            self.mac
        } else {
            None
        }
    }
}

fn ndmsg(family: i32, ifindex: u32, state: u16, flags: u8) -> [u8; NDMSG_LEN] {
    let mut header = [0u8; NDMSG_LEN];
    header[0] = family as u8;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header[8..10].copy_from_slice(&state.to_ne_bytes());
    header[10] = flags;
    header
}

/// The `RTM_GETNEIGH` dump of the neighbours of every family (the parser keeps IPv4 and
/// IPv6 ones).
pub fn dump_request(seq: u32) -> Vec<u8> {
    Request::new(
        kind::GET_NEIGH,
        flags::REQUEST | flags::DUMP,
        seq,
        &ndmsg(libc::AF_UNSPEC, 0, 0, 0),
    )
    .finish()
}

/// The `RTM_NEWNEIGH` + `NTF_USE` request that makes the kernel resolve `addr` on `ifindex`
/// (creating an entry when there is none).
pub fn resolve_request(ifindex: u32, addr: IpAddr, seq: u32) -> Vec<u8> {
    let (family, octets): (i32, &[u8]) = match &addr {
        IpAddr::V4(a) => (libc::AF_INET, &a.octets()[..]),
        IpAddr::V6(a) => (libc::AF_INET6, &a.octets()[..]),
    };
    let header = ndmsg(family, ifindex, 0, NTF_USE);
    Request::new(
        kind::NEW_NEIGH,
        flags::REQUEST | flags::ACK | flags::CREATE,
        seq,
        &header,
    )
    .attr(NDA_DST, octets)
    .finish()
}

/// Parses an `RTM_NEWNEIGH` payload; None for families other than IPv4 and IPv6 or
/// truncated messages.
pub fn parse_neighbour(payload: &[u8]) -> Option<Neighbour> {
    let header = payload.get(..NDMSG_LEN)?;
    let family = i32::from(header[0]);
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return None;
    }
    let ifindex = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    let state = u16::from_ne_bytes([header[8], header[9]]);
    let mut addr = None;
    let mut mac = None;
    for (kind, value) in attributes(payload, NDMSG_LEN) {
        match kind {
            NDA_DST if family == libc::AF_INET => {
                addr = <[u8; 4]>::try_from(value)
                    .ok()
                    .map(|a| Ipv4Addr::from(a).into())
            }
            NDA_DST => {
                addr = <[u8; 16]>::try_from(value)
                    .ok()
                    .map(|a| Ipv6Addr::from(a).into())
            }
            NDA_LLADDR => mac = <[u8; 6]>::try_from(value).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex,
        addr: addr?,
        mac,
        state,
    })
}

/// Reads every IPv4 and IPv6 neighbour the kernel knows (calling thread's namespace).
pub fn dump(socket: &mut RouteSocket) -> io::Result<Vec<Neighbour>> {
    let seq = socket.next_seq();
    let mut found = Vec::new();
    socket.transact(&dump_request(seq), seq, |m| {
        if m.kind == kind::NEW_NEIGH {
            found.extend(parse_neighbour(m.payload));
        }
    })?;
    Ok(found)
}

/// Asks the kernel to resolve `addr` on interface `ifindex`.
pub fn resolve(socket: &mut RouteSocket, ifindex: u32, addr: IpAddr) -> io::Result<()> {
    let seq = socket.next_seq();
    socket.transact(&resolve_request(ifindex, addr, seq), seq, |_| {})
}

/// How often one address may be asked for again while it stays unresolved.
pub const REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// The MACs of the director's ports' neighbours, as the side thread keeps them.
#[derive(Debug)]
pub struct NeighbourCache {
    socket: RouteSocket,
    /// Interface index of each port (index = port number).
    ports: Vec<u32>,
    macs: HashMap<(u8, IpAddr), Mac>,
    asked: HashMap<(u8, IpAddr), Instant>,
}

impl NeighbourCache {
    /// A cache for ports whose interface indexes are `port_ifindexes` (port 0 first), filled
    /// from the kernel's table.
    pub fn open(port_ifindexes: &[u32]) -> io::Result<NeighbourCache> {
        let mut cache = NeighbourCache {
            socket: RouteSocket::open()?,
            ports: port_ifindexes.to_vec(),
            macs: HashMap::new(),
            asked: HashMap::new(),
        };
        cache.refresh()?;
        Ok(cache)
    }

    /// Re-reads the kernel's table; returns how many usable neighbours the ports have.
    ///
    /// xvs's own traffic bypasses the kernel, so the kernel's entries for real servers only
    /// age: they go STALE and may be garbage-collected while xvs still sends to them. A MAC
    /// therefore stays known until the kernel reports the neighbour FAILED (or changes it),
    /// not merely because its entry disappeared from the table.
    pub fn refresh(&mut self) -> io::Result<usize> {
        let entries = dump(&mut self.socket)?;
        for entry in entries {
            let Some(port) = self.ports.iter().position(|&i| i == entry.ifindex) else {
                continue;
            };
            let Ok(port) = u8::try_from(port) else {
                continue;
            };
            if let Some(mac) = entry.usable_mac() {
                self.macs.insert((port, entry.addr), mac);
                self.asked.remove(&(port, entry.addr));
            } else if entry.state & state::FAILED != 0 {
                self.macs.remove(&(port, entry.addr));
            }
        }
        Ok(self.macs.len())
    }

    /// The MAC of `addr` on `port`, if resolved.
    pub fn lookup(&self, port: u8, addr: impl Into<IpAddr>) -> Option<Mac> {
        self.macs.get(&(port, addr.into())).copied()
    }

    /// Starts resolving `addr` on `port` unless it is known or was asked for less than
    /// [`REQUEST_INTERVAL`] ago. Returns whether a request was sent.
    pub fn request(&mut self, port: u8, addr: impl Into<IpAddr>) -> io::Result<bool> {
        let addr = addr.into();
        let Some(&ifindex) = self.ports.get(usize::from(port)) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such port"));
        };
        if self.lookup(port, addr).is_some() {
            return Ok(false);
        }
        let now = Instant::now();
        if self
            .asked
            .get(&(port, addr))
            .is_some_and(|&at| now - at < REQUEST_INTERVAL)
        {
            return Ok(false);
        }
        self.asked.insert((port, addr), now);
        resolve(&mut self.socket, ifindex, addr)?;
        Ok(true)
    }

    /// The resolved neighbours, as the workers read them.
    pub fn neighbours(&self) -> Neighbours {
        let mut table = Neighbours::new();
        for (&(port, addr), &mac) in &self.macs {
            match addr {
                IpAddr::V4(a) => table.insert(port, a, mac),
                IpAddr::V6(a) => table.insert6(port, a, mac),
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWNEIGH` payload as the kernel sends it (x86-64): 10.0.0.2 on ifindex 3,
    /// REACHABLE, MAC 02:00:00:00:00:09, followed by an NDA_CACHEINFO the parser skips.
    const REACHABLE_ENTRY: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, // AF_INET, pads
        0x03, 0x00, 0x00, 0x00, // ifindex 3
        0x02, 0x00, 0x00, 0x01, // state REACHABLE, flags, type RTN_UNICAST
        0x08, 0x00, 0x01, 0x00, 10, 0, 0, 2, // NDA_DST
        0x0a, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, // NDA_LLADDR
        0x14, 0x00, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, // NDA_CACHEINFO
    ];

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn parses_a_neighbour_message() {
        let entry = parse_neighbour(REACHABLE_ENTRY).unwrap();
        assert_eq!(entry.ifindex, 3);
        assert_eq!(entry.addr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(entry.mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(entry.usable_mac(), Some([2, 0, 0, 0, 0, 9]));
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn unusable_states_and_other_families_give_no_mac() {
        let mut incomplete = REACHABLE_ENTRY.to_vec();
        incomplete[8] = state::INCOMPLETE as u8;
        assert_eq!(parse_neighbour(&incomplete).unwrap().usable_mac(), None);
        let mut failed = REACHABLE_ENTRY.to_vec();
        failed[8] = state::FAILED as u8;
        assert_eq!(parse_neighbour(&failed).unwrap().usable_mac(), None);
        let mut bridge = REACHABLE_ENTRY.to_vec();
        bridge[0] = libc::AF_BRIDGE as u8;
        assert_eq!(parse_neighbour(&bridge), None);
        let mut short_v6 = REACHABLE_ENTRY.to_vec();
        short_v6[0] = libc::AF_INET6 as u8;
        assert_eq!(
            parse_neighbour(&short_v6),
            None,
            "a 4-byte NDA_DST is no IPv6 address"
        );
        for len in 0..REACHABLE_ENTRY.len() {
            let _ = parse_neighbour(&REACHABLE_ENTRY[..len]);
        }
        assert_eq!(
            parse_neighbour(&REACHABLE_ENTRY[..19]),
            None,
            "no complete NDA_DST"
        );
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn the_resolve_request_is_newneigh_with_ntf_use() {
        let bytes = resolve_request(3, Ipv4Addr::new(10, 0, 0, 2).into(), 42);
        let mut expected = vec![36, 0, 0, 0]; // length
        expected.extend_from_slice(&[28, 0]); // RTM_NEWNEIGH
        expected.extend_from_slice(&[0x05, 0x04]); // REQUEST | ACK | CREATE
        expected.extend_from_slice(&[42, 0, 0, 0, 0, 0, 0, 0]); // seq, pid
        expected.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0x01, 0]); // ndmsg, NTF_USE
        expected.extend_from_slice(&[8, 0, 1, 0, 10, 0, 0, 2]); // NDA_DST
        assert_eq!(bytes, expected);
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn the_dump_request_asks_for_every_family() {
        let bytes = dump_request(1);
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[4..8], &[30, 0, 0x01, 0x03]); // RTM_GETNEIGH, REQUEST | DUMP
        assert_eq!(bytes[16], 0); // AF_UNSPEC
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn ipv6_neighbours_parse_and_resolve_with_their_family() {
        let v6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut entry = vec![10, 0, 0, 0, 3, 0, 0, 0, 0x04, 0, 0, 1]; // AF_INET6, ifindex 3, STALE
        entry.extend_from_slice(&[20, 0, 1, 0]);
        entry.extend_from_slice(&v6.octets());
        entry.extend_from_slice(&[10, 0, 2, 0, 2, 0, 0, 0, 0, 9, 0, 0]);
        let parsed = parse_neighbour(&entry).unwrap();
        assert_eq!(parsed.addr, IpAddr::V6(v6));
        assert_eq!(parsed.usable_mac(), Some([2, 0, 0, 0, 0, 9]));
        let bytes = resolve_request(3, v6.into(), 7);
        assert_eq!(bytes.len(), 16 + 12 + 20);
        assert_eq!(bytes[16], 10, "ndmsg family AF_INET6");
        assert_eq!(bytes[26], NTF_USE);
        assert_eq!(&bytes[28..32], &[20, 0, 1, 0], "NDA_DST of 16 bytes");
        assert_eq!(&bytes[32..48], &v6.octets());
    }
}
