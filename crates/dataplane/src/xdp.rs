//! The XDP filter: which frames go to xvs's AF_XDP sockets, and which to the kernel.
//!
//! The program (`bpf/xdp_filter.c`, compiled by clang in `build.rs` and embedded here) sends to
//! the AF_XDP socket of the receiving queue only
//!
//! - IPv4 or IPv6 to a virtual service: `(dst addr, dst port, protocol)` is in the VIP map
//!   of its family;
//! - NAT return traffic: `(src addr, src port, protocol)` of a NAT real server is in the
//!   NAT-return map;
//!
//! - marked traffic: TCP or UDP whose `(protocol, destination)` has a longest matching prefix
//!   in the mark map of its family listing its destination port ([`MarkEntry`], the fwmark
//!   services' rules);
//!
//! and passes everything else to the kernel (`XDP_PASS`): ARP, neighbour discovery, the
//! director's own traffic, ICMP echo to a VIP (the kernel answers it when the VIP is on the
//! interface). A queue with no socket registered passes too. Each map is looked up with the exact port, then
//! port 0 ("any port" of that protocol, for persistent port-0 services), then protocol 0 as
//! well ("anything to that address", fwmark-like services); see [`Match`]. ICMP errors are
//! matched by the packet they quote, as IPVS does: quoting a packet from a VIP:port, or to a
//! NAT real server's addr:port, makes the error xvs's (ICMP echo to a VIP is not).
//!
//! Why C and aya: the C stays readable and reviewable, clang is a build dependency already, and
//! aya loads the object, fixes up its map references and creates the BPF link in safe Rust.
//! The program is attached through a BPF link (`BPF_LINK_CREATE`), so it goes away when the
//! [`XdpFilter`] is dropped *or the process dies*: a crashed director never leaves a filter
//! that steals VIP traffic into sockets nobody reads.
//!
//! The SYN filter ([`crate::syn_filter`]) sits in the same program: while it is in force, a
//! TCP SYN to a service from an address not yet proven real is dropped there.
//!
//! Reloads: [`XdpFilter::set_vips`] and [`XdpFilter::set_nat_returns`] insert the new entries
//! first and delete the stale ones afterwards, so an entry present before and after a reload
//! never disappears, even for a moment.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::{Ebpf, Pod};

use crate::syn_filter::SynFilterMaps;

/// The compiled filter program (see `build.rs`). aya needs the ELF 8-byte aligned.
static FILTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_filter.o"));

const PROGRAM: &str = "xvs_filter";
const VIP_MAP: &str = "xvs_vips";
const NAT_RETURN_MAP: &str = "xvs_nat_returns";
const LOCALS_MAP: &str = "xvs_locals";
const XSK_MAP: &str = "xvs_xsks";
const MARK_MAP_V4: &str = "xvs_marks_v4";
const MARK_MAP_V6: &str = "xvs_marks_v6";

/// Port ranges one mark-map entry holds (`MARK_RANGES` in the program: a bounded loop).
pub const MARK_RANGES: usize = 16;

/// Entries each family's mark map holds (`MAX_MARK_DESTS`).
pub const MAX_MARK_DESTS: usize = 4096;
const VIP6_MAP: &str = "xvs_vips6";
const NAT_RETURN6_MAP: &str = "xvs_nat_returns6";
const LOCALS6_MAP: &str = "xvs_locals6";
const SYN_FILTER_MAP: &str = "xvs_syn_filter";
const SYN_COUNTS_MAP: &str = "xvs_syn_counts";

/// IP protocol numbers the filter understands ports for.
pub mod proto {
    /// Matches every protocol (with port 0 only).
    pub const ANY: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// One entry of a filter map: an address, a port (0: any port) and a protocol (0: any
/// protocol; then the port must be 0 too, or the entry can never match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// The VIP (VIP map) or the real server's address (NAT-return map).
    pub addr: Ipv4Addr,
    /// Destination port (VIP map) or source port (NAT-return map); 0 matches any.
    pub port: u16,
    /// IP protocol number, see [`proto`]; 0 matches any.
    pub proto: u8,
}

impl Match {
    /// A TCP service or real server.
    pub fn tcp(addr: Ipv4Addr, port: u16) -> Self {
        Match {
            addr,
            port,
            proto: proto::TCP,
        }
    }

    /// A UDP service or real server.
    pub fn udp(addr: Ipv4Addr, port: u16) -> Self {
        Match {
            addr,
            port,
            proto: proto::UDP,
        }
    }

    /// Everything to (or, for NAT returns, from) `addr`.
    pub fn any(addr: Ipv4Addr) -> Self {
        Match {
            addr,
            port: 0,
            proto: proto::ANY,
        }
    }
}

/// The map key as the program reads it: `struct match_key` in `bpf/xdp_filter.c`. Address
/// and port are in network byte order, exactly as they sit in the packet.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchKey {
    addr: [u8; 4],
    port: [u8; 2],
    proto: u8,
    pad: u8,
}

// SAFETY: `MatchKey` is `repr(C)`, made of byte arrays and bytes only (no padding, every bit
// pattern valid), which is what `Pod` requires for copying it to and from the kernel.
unsafe impl Pod for MatchKey {}

impl From<Match> for MatchKey {
    fn from(m: Match) -> Self {
        MatchKey {
            addr: m.addr.octets(),
            port: m.port.to_be_bytes(),
            proto: m.proto,
            pad: 0,
        }
    }
}

impl MatchKey {
    /// The key's bytes, as the kernel stores them.
    pub fn to_bytes(self) -> [u8; 8] {
        let [a, b, c, d] = self.addr;
        let [p, q] = self.port;
        [a, b, c, d, p, q, self.proto, self.pad]
    }
}

/// One entry of a mark map: TCP or UDP (`proto`) to `addr/prefix_len` on one of `ports`
/// (first, last; at most [`MARK_RANGES`]) is marked traffic. The address's family picks the
/// map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkEntry {
    /// IP protocol number.
    pub proto: u8,
    /// The destination network.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Destination port ranges, inclusive.
    pub ports: Vec<(u16, u16)>,
}

/// The IPv4 mark map's key data: `struct mark_key_v4`'s `data`, protocol then address
/// (network order), then padding the prefix never reaches.
type MarkKeyV4 = [u8; 8];

/// [`MarkKeyV4`] for IPv6: `struct mark_key_v6`'s `data`.
type MarkKeyV6 = [u8; 20];

/// The key of `entry` in its family's map: data `N` bytes, protocol then the address's
/// `octets`, the prefix covering the protocol byte too.
fn mark_key<const N: usize>(entry: &MarkEntry, octets: &[u8]) -> Key<[u8; N]> {
    let mut data = [0; N];
    data[0] = entry.proto;
    data[1..=octets.len()].copy_from_slice(octets);
    Key::new(8 + u32::from(entry.prefix_len), data)
}

/// `struct mark_ports`: how many ranges, then `[first, last]` pairs in host order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkPorts {
    count: u32,
    ranges: [[u16; 2]; MARK_RANGES],
}

// SAFETY: `MarkPorts` is `repr(C)` of a u32 and u16 arrays, 4 + 64 bytes with no padding
// (every bit pattern valid), which is what `Pod` requires.
unsafe impl Pod for MarkPorts {}

impl MarkPorts {
    /// The value for `ports`, `None` beyond [`MARK_RANGES`].
    pub fn new(ports: &[(u16, u16)]) -> Option<MarkPorts> {
        if ports.len() > MARK_RANGES {
            return None;
        }
        let mut value = MarkPorts {
            count: ports.len() as u32,
            ranges: [[0; 2]; MARK_RANGES],
        };
        for (slot, &(first, last)) in value.ranges.iter_mut().zip(ports) {
            *slot = [first, last];
        }
        Some(value)
    }
}

/// [`Match`] for IPv6: the program's IPv6 maps, beside the IPv4 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match6 {
    /// The address.
    pub addr: Ipv6Addr,
    /// The port; 0 matches any port of `proto`.
    pub port: u16,
    /// IP protocol ([`proto`]); 0 (with port 0) matches any traffic to the address.
    pub proto: u8,
}

/// The IPv6 map key as the program reads it: `struct match_key6` in `bpf/xdp_filter.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchKey6 {
    addr: [u8; 16],
    port: [u8; 2],
    proto: u8,
    pad: u8,
}

// SAFETY: `MatchKey6` is `repr(C)`, made of byte arrays and bytes only (no padding, every
// bit pattern valid), which is what `Pod` requires for copying it to and from the kernel.
unsafe impl Pod for MatchKey6 {}

impl From<Match6> for MatchKey6 {
    fn from(m: Match6) -> Self {
        MatchKey6 {
            addr: m.addr.octets(),
            port: m.port.to_be_bytes(),
            proto: m.proto,
            pad: 0,
        }
    }
}

impl MatchKey6 {
    /// The key's bytes, as the kernel stores them.
    pub fn to_bytes(self) -> [u8; 20] {
        let mut bytes = [0u8; 20];
        bytes[..16].copy_from_slice(&self.addr);
        bytes[16..18].copy_from_slice(&self.port);
        bytes[18] = self.proto;
        bytes
    }
}

/// How the program is attached: `drv` (native, in the driver) or `skb` (generic, after the
/// kernel built an skb; works everywhere, slower). Zero-copy AF_XDP needs `drv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native XDP (`XDP_FLAGS_DRV_MODE`).
    Drv,
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`).
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Drv => "drv",
            XdpMode::Skb => "skb",
        })
    }
}

/// Which XDP mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Native only.
    Drv,
    /// Generic only.
    Skb,
}

/// Why the filter could not be loaded, attached or updated.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The embedded object did not load (verifier, BTF, map creation).
    #[error("loading the XDP filter: {0}")]
    Load(#[from] aya::EbpfError),
    /// The program was refused.
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// The program could not be attached to the interface; `reason` says why in words
    /// (the system call's error included).
    #[error("attaching in {mode} mode: {reason}")]
    Attach {
        /// The mode tried last.
        mode: XdpMode,
        /// Why.
        reason: String,
    },
    /// A mark-map entry has more port ranges than the program reads.
    #[error("mark rules for {0}: more than {MARK_RANGES} port ranges for one destination")]
    TooManyRanges(String),
    /// A map update failed.
    #[error("XDP filter map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The embedded object lacks a program or map this code expects (a build mismatch).
    #[error("the XDP filter object has no {0}")]
    Missing(&'static str),
}

/// The filter attached to one interface, with its maps. Dropping it detaches the program.
pub struct XdpFilter {
    vips: HashMap<MapData, MatchKey, u32>,
    nat_returns: HashMap<MapData, MatchKey, u32>,
    locals: HashMap<MapData, MatchKey, u32>,
    marks_v4: LpmTrie<MapData, MarkKeyV4, MarkPorts>,
    marks_v6: LpmTrie<MapData, MarkKeyV6, MarkPorts>,
    vips6: HashMap<MapData, MatchKey6, u32>,
    nat_returns6: HashMap<MapData, MatchKey6, u32>,
    locals6: HashMap<MapData, MatchKey6, u32>,
    sockets: XskMap<MapData>,
    syn_filter: Option<SynFilterMaps>,
    ifindex: u32,
    mode: XdpMode,
    // Owns the program and its link: dropped last, so the maps above close first and the
    // program detaches when this goes.
    _ebpf: Ebpf,
}

impl fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpFilter")
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl XdpFilter {
    /// Loads the filter and attaches it to interface `ifindex` through a BPF link. The maps
    /// start empty: nothing is redirected until [`XdpFilter::set_vips`] and
    /// [`XdpFilter::register_socket`] say so.
    pub fn attach(ifindex: u32, mode: AttachMode) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(FILTER_OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing(PROGRAM))?
            .try_into()?;
        program.load()?;
        let mode = match mode {
            AttachMode::Drv => attach_in(program, ifindex, XdpMode::Drv)?,
            AttachMode::Skb => attach_in(program, ifindex, XdpMode::Skb)?,
            AttachMode::Auto => match attach_in(program, ifindex, XdpMode::Drv) {
                Ok(mode) => mode,
                Err(native) => {
                    tracing::info!(ifindex, error = %native, "native XDP refused, using generic");
                    attach_in(program, ifindex, XdpMode::Skb)?
                }
            },
        };
        let vips = HashMap::try_from(take_map(&mut ebpf, VIP_MAP)?)?;
        let nat_returns = HashMap::try_from(take_map(&mut ebpf, NAT_RETURN_MAP)?)?;
        let locals = HashMap::try_from(take_map(&mut ebpf, LOCALS_MAP)?)?;
        let marks_v4 = LpmTrie::try_from(take_map(&mut ebpf, MARK_MAP_V4)?)?;
        let marks_v6 = LpmTrie::try_from(take_map(&mut ebpf, MARK_MAP_V6)?)?;
        let vips6 = HashMap::try_from(take_map(&mut ebpf, VIP6_MAP)?)?;
        let nat_returns6 = HashMap::try_from(take_map(&mut ebpf, NAT_RETURN6_MAP)?)?;
        let locals6 = HashMap::try_from(take_map(&mut ebpf, LOCALS6_MAP)?)?;
        let sockets = XskMap::try_from(take_map(&mut ebpf, XSK_MAP)?)?;
        let syn_filter = SynFilterMaps::new(
            Array::try_from(take_map(&mut ebpf, SYN_FILTER_MAP)?)?,
            PerCpuArray::try_from(take_map(&mut ebpf, SYN_COUNTS_MAP)?)?,
        );
        tracing::info!(ifindex, %mode, "XDP filter attached");
        Ok(XdpFilter {
            vips,
            nat_returns,
            locals,
            marks_v4,
            marks_v6,
            vips6,
            nat_returns6,
            locals6,
            sockets,
            syn_filter: Some(syn_filter),
            ifindex,
            mode,
            _ebpf: ebpf,
        })
    }

    /// The SYN filter's switch and counters, for the thread that drives it
    /// ([`crate::syn_filter::SynGuard`]); `None` once taken. The filter starts off.
    pub fn take_syn_filter(&mut self) -> Option<SynFilterMaps> {
        self.syn_filter.take()
    }

    /// The interface the filter is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The XDP mode in use.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Makes `matches` the VIP map's whole content (see the module doc for the order).
    pub fn set_vips(&mut self, matches: &[Match]) -> Result<(), XdpError> {
        replace_contents(&mut self.vips, matches)
    }

    /// Makes `matches` the NAT-return map's whole content: one entry per NAT real server
    /// (address, port, protocol).
    pub fn set_nat_returns(&mut self, matches: &[Match]) -> Result<(), XdpError> {
        replace_contents(&mut self.nat_returns, matches)
    }

    /// Makes `addrs` the director's own addresses: traffic to them stays the kernel's even
    /// when it comes from a NAT real server's service port (the director's own connections
    /// to its real servers get their replies).
    pub fn set_locals(&mut self, addrs: &[Ipv4Addr]) -> Result<(), XdpError> {
        let matches: Vec<Match> = addrs.iter().map(|&a| Match::any(a)).collect();
        replace_contents(&mut self.locals, &matches)
    }

    /// Makes `entries` the mark maps' whole content, new and changed entries first, stale
    /// ones after (as for the other maps, a destination marked before and after a reload
    /// never stops being redirected).
    pub fn set_marks(&mut self, entries: &[MarkEntry]) -> Result<(), XdpError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries {
            let value = MarkPorts::new(&entry.ports).ok_or_else(|| {
                XdpError::TooManyRanges(format!("{}/{}", entry.addr, entry.prefix_len))
            })?;
            match entry.addr {
                IpAddr::V4(a) => v4.push((mark_key(entry, &a.octets()), value)),
                IpAddr::V6(a) => v6.push((mark_key(entry, &a.octets()), value)),
            }
        }
        replace_marks(&mut self.marks_v4, &v4)?;
        replace_marks(&mut self.marks_v6, &v6)
    }

    /// The mark maps' current entries: protocol, network, prefix length.
    pub fn marks(&self) -> Result<Vec<(u8, IpAddr, u8)>, XdpError> {
        let mut marks = Vec::new();
        for key in self.marks_v4.keys() {
            let (len, d) = key_bytes(&key?);
            let addr = Ipv4Addr::new(d[1], d[2], d[3], d[4]);
            marks.push((d[0], IpAddr::V4(addr), (len - 8) as u8));
        }
        for key in self.marks_v6.keys() {
            let (len, d) = key_bytes(&key?);
            let octets: [u8; 16] = d[1..17].try_into().expect("16 bytes");
            marks.push((d[0], IpAddr::V6(Ipv6Addr::from(octets)), (len - 8) as u8));
        }
        Ok(marks)
    }

    /// [`set_vips`](Self::set_vips) for the IPv6 services.
    pub fn set_vips6(&mut self, matches: &[Match6]) -> Result<(), XdpError> {
        replace_contents(&mut self.vips6, matches)
    }

    /// [`set_nat_returns`](Self::set_nat_returns) for IPv6 NAT real servers.
    pub fn set_nat_returns6(&mut self, matches: &[Match6]) -> Result<(), XdpError> {
        replace_contents(&mut self.nat_returns6, matches)
    }

    /// [`set_locals`](Self::set_locals) for the director's IPv6 addresses.
    pub fn set_locals6(&mut self, addrs: &[Ipv6Addr]) -> Result<(), XdpError> {
        let matches: Vec<Match6> = addrs
            .iter()
            .map(|&addr| Match6 {
                addr,
                port: 0,
                proto: proto::ANY,
            })
            .collect();
        replace_contents(&mut self.locals6, &matches)
    }

    /// The IPv6 VIP map's current entries.
    pub fn vips6(&self) -> Result<Vec<MatchKey6>, XdpError> {
        Ok(self.vips6.keys().collect::<Result<_, _>>()?)
    }

    /// The VIP map's current entries (for `xvsadm` and tests).
    pub fn vips(&self) -> Result<Vec<MatchKey>, XdpError> {
        Ok(self.vips.keys().collect::<Result<_, _>>()?)
    }

    /// The NAT-return map's current entries.
    pub fn nat_returns(&self) -> Result<Vec<MatchKey>, XdpError> {
        Ok(self.nat_returns.keys().collect::<Result<_, _>>()?)
    }

    /// Sends the frames the filter selects on rx queue `queue` to the AF_XDP socket `socket`,
    /// which must already be bound to that queue of this interface. Closing the socket
    /// removes it from the map (the kernel does that).
    pub fn register_socket(&mut self, queue: u32, socket: BorrowedFd<'_>) -> Result<(), XdpError> {
        self.sockets.set(queue, socket.as_raw_fd(), 0)?;
        Ok(())
    }
}

/// A mark key's prefix length and data (the packed key cannot be hashed in place).
fn key_bytes<const N: usize>(key: &Key<[u8; N]>) -> (u32, [u8; N]) {
    (key.prefix_len(), key.data())
}

/// Inserts every wanted mark entry of one family's map, then removes the stale ones.
fn replace_marks<const N: usize>(
    map: &mut LpmTrie<MapData, [u8; N], MarkPorts>,
    entries: &[(Key<[u8; N]>, MarkPorts)],
) -> Result<(), XdpError>
where
    [u8; N]: Pod,
{
    let mut wanted = HashSet::new();
    for (key, value) in entries {
        map.insert(key, value, 0)?;
        wanted.insert(key_bytes(key));
    }
    let stale: Vec<Key<[u8; N]>> = map
        .keys()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|key| !wanted.contains(&key_bytes(key)))
        .collect();
    for key in &stale {
        map.remove(key)?;
    }
    Ok(())
}

fn attach_in(program: &mut Xdp, ifindex: u32, mode: XdpMode) -> Result<XdpMode, XdpError> {
    let flags = match mode {
        XdpMode::Drv => XdpFlags::DRV_MODE,
        XdpMode::Skb => XdpFlags::SKB_MODE,
    };
    program
        .attach_to_if_index(ifindex, flags)
        .map_err(|e| XdpError::Attach {
            mode,
            reason: attach_reason(&e),
        })?;
    Ok(mode)
}

/// Why an attach failed, in words: aya's error names the system call, not its error.
fn attach_reason(e: &aya::programs::ProgramError) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(libc::EBUSY | libc::EEXIST) => format!(
                    "the interface already has an XDP program attached: it is in use (by another \
                     xvs, or another XDP program; `ip link show` names it) ({e}: {io})"
                ),
                _ => format!("{e}: {io}"),
            };
        }
        source = s.source();
    }
    e.to_string()
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    ebpf.take_map(name).ok_or(XdpError::Missing(name))
}

/// Inserts every wanted entry, then removes the entries no longer wanted.
fn replace_contents<M: Copy, K: Pod + Eq + Hash + From<M>>(
    map: &mut HashMap<MapData, K, u32>,
    matches: &[M],
) -> Result<(), XdpError> {
    let wanted: HashSet<K> = matches.iter().map(|&m| K::from(m)).collect();
    for key in &wanted {
        map.insert(key, 1, 0)?;
    }
    let stale: Vec<K> = map
        .keys()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|key| !wanted.contains(key))
        .collect();
    for key in &stale {
        map.remove(key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_keys_are_network_order_bytes() {
        let key = MatchKey::from(Match::udp(Ipv4Addr::new(10, 0, 0, 1), 80));
        assert_eq!(key.to_bytes(), [10, 0, 0, 1, 0x00, 0x50, 17, 0]);
        let key = MatchKey::from(Match::tcp(Ipv4Addr::new(192, 0, 2, 7), 0x1f90));
        assert_eq!(key.to_bytes(), [192, 0, 2, 7, 0x1f, 0x90, 6, 0]);
        let key = MatchKey::from(Match::any(Ipv4Addr::new(198, 51, 100, 9)));
        assert_eq!(key.to_bytes(), [198, 51, 100, 9, 0, 0, 0, 0]);
    }

    #[test]
    fn mark_keys_and_values_have_the_programs_layout() {
        let entry = MarkEntry {
            proto: proto::TCP,
            addr: Ipv4Addr::new(192, 0, 2, 0).into(),
            prefix_len: 24,
            ports: vec![(80, 80), (8000, 8100)],
        };
        let key: Key<MarkKeyV4> = mark_key(&entry, &[192, 0, 2, 0]);
        assert_eq!(key_bytes(&key), (32, [6, 192, 0, 2, 0, 0, 0, 0]));
        assert_eq!(std::mem::size_of::<Key<MarkKeyV4>>(), 12);
        let v6: Ipv6Addr = "2001:db8::".parse().unwrap();
        let entry6 = MarkEntry {
            addr: v6.into(),
            prefix_len: 64,
            ..entry.clone()
        };
        let key6: Key<MarkKeyV6> = mark_key(&entry6, &v6.octets());
        let (len, data) = key_bytes(&key6);
        assert_eq!(
            (len, data[0], &data[1..17], &data[17..]),
            (72, 6, &v6.octets()[..], &[0u8; 3][..])
        );
        assert_eq!(std::mem::size_of::<Key<MarkKeyV6>>(), 24);
        assert_eq!(std::mem::size_of::<MarkPorts>(), 4 + 4 * MARK_RANGES);
        let value = MarkPorts::new(&entry.ports).unwrap();
        assert_eq!((value.count, value.ranges[1]), (2, [8000, 8100]));
        assert!(MarkPorts::new(&[(1, 1); MARK_RANGES + 1]).is_none());
    }

    #[test]
    fn match_key_layout_is_the_programs() {
        assert_eq!(std::mem::size_of::<MatchKey>(), 8);
        assert_eq!(std::mem::align_of::<MatchKey>(), 1);
        assert_eq!(std::mem::size_of::<MatchKey6>(), 20);
        assert_eq!(std::mem::align_of::<MatchKey6>(), 1);
    }

    #[test]
    fn ipv6_match_keys_are_network_order_bytes() {
        let key = MatchKey6::from(Match6 {
            addr: "2001:db8::10".parse().unwrap(),
            port: 0x1f90,
            proto: proto::TCP,
        });
        let mut want = [0u8; 20];
        want[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        want[15] = 0x10;
        want[16..].copy_from_slice(&[0x1f, 0x90, 6, 0]);
        assert_eq!(key.to_bytes(), want);
    }

    #[test]
    fn the_embedded_object_is_a_bpf_elf() {
        assert_eq!(&FILTER_OBJECT[..4], b"\x7fELF");
        // e_machine (offset 18, little-endian ELF) is EM_BPF = 247.
        assert_eq!(FILTER_OBJECT[18], 247);
        assert_eq!(FILTER_OBJECT.as_ptr() as usize % 8, 0);
    }

    #[test]
    fn the_filter_can_move_to_the_thread_that_owns_it() {
        fn assert_send<T: Send>() {}
        assert_send::<XdpFilter>();
    }

    #[test]
    fn modes_print_as_xvsadm_shows_them() {
        assert_eq!(XdpMode::Drv.to_string(), "drv");
        assert_eq!(XdpMode::Skb.to_string(), "skb");
    }
}
