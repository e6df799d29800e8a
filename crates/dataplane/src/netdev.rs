//! Facts about a director interface, by name: index, MAC, MTU, IPv4 and IPv6 addresses,
//! RX queues.
//!
//! Read through rtnetlink (`RTM_GETLINK`, `RTM_GETADDR`) and the ethtool ioctl, both of which
//! answer for the calling thread's network namespace; sysfs would answer for the namespace it
//! was mounted in, which is wrong for a director started inside `ip netns exec` or `setns`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netlink::{self, RouteSocket, attributes, flags, kind};

/// A MAC address.
pub type Mac = [u8; 6];

const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// What xvs needs to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Hardware address (source MAC of every frame xvs sends on it).
    pub mac: Mac,
    /// IP MTU.
    pub mtu: u32,
    /// IPv4 addresses with their prefix lengths, in the kernel's order.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses with their prefix lengths (link-local ones included), kernel order.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// RX queues in use: one AF_XDP socket and worker each.
    pub rx_queues: u32,
}

impl NetDev {
    /// Looks `name` up in the calling thread's network namespace.
    pub fn by_name(name: &str) -> io::Result<NetDev> {
        let mut socket = RouteSocket::open()?;
        let mut dev = link_by_name(&mut socket, name)?;
        dev.ipv4 = ipv4_addresses(&mut socket, dev.ifindex)?;
        dev.ipv6 = ipv6_addresses(&mut socket, dev.ifindex)?;
        if let Some(active) = ethtool_rx_channels(name) {
            dev.rx_queues = active;
        }
        Ok(dev)
    }
}

/// The `ifinfomsg` of a request: family unspecified, everything else zero.
fn ifinfomsg(ifindex: i32) -> [u8; IFINFOMSG_LEN] {
    let mut header = [0u8; IFINFOMSG_LEN];
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    header
}

/// The `RTM_GETLINK` request for interface `name`.
pub fn link_request(name: &str, seq: u32) -> Vec<u8> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    netlink::Request::new(kind::GET_LINK, flags::REQUEST, seq, &ifinfomsg(0))
        .attr(IFLA_IFNAME, &ifname)
        .finish()
}

/// `IFF_UP` and `IFF_RUNNING` (carrier) of `ifi_flags`.
const IFF_UP_RUNNING: u32 = 0x1 | 0x40;

/// Whether interface `name` is up and has carrier (`IFF_UP` and `IFF_RUNNING`), in the
/// calling thread's namespace. An interface that does not exist is an error.
pub fn link_is_running(name: &str) -> io::Result<bool> {
    let mut socket = RouteSocket::open()?;
    let seq = socket.next_seq();
    let mut flags = None;
    socket.transact(&link_request(name, seq), seq, |m| {
        if m.kind == kind::NEW_LINK && flags.is_none() {
            flags = link_flags(m.payload);
        }
    })?;
    let flags = flags
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))?;
    Ok(flags & IFF_UP_RUNNING == IFF_UP_RUNNING)
}

/// `ifi_flags` of an `RTM_NEWLINK` payload.
pub fn link_flags(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?))
}

/// The `RTM_NEWADDR` (`add`) or `RTM_DELADDR` request for `addr/prefix` on interface
/// `ifindex`. Adding replaces an address already there, so it can be repeated.
pub fn address_request(add: bool, ifindex: u32, addr: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut header = [0u8; IFADDRMSG_LEN];
    header[0] = libc::AF_INET as u8;
    header[1] = prefix;
    header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let (kind, extra) = if add {
        (kind::NEW_ADDR, flags::CREATE | flags::REPLACE)
    } else {
        (kind::DEL_ADDR, 0)
    };
    netlink::Request::new(kind, flags::REQUEST | flags::ACK | extra, seq, &header)
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets())
        .finish()
}

/// Adds (`add`) or removes `addr/prefix` on interface `ifindex`; removing an address that is
/// not there succeeds.
pub fn set_ipv4_address(add: bool, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut socket = RouteSocket::open()?;
    let seq = socket.next_seq();
    match socket.transact(
        &address_request(add, ifindex, addr, prefix, seq),
        seq,
        |_| {},
    ) {
        Err(e) if !add && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

/// Parses an `RTM_NEWLINK` payload. None when it is too short or lacks a name.
pub fn parse_link(payload: &[u8]) -> Option<NetDev> {
    let header = payload.get(..IFINFOMSG_LEN)?;
    let ifindex = u32::try_from(i32::from_ne_bytes(header[4..8].try_into().ok()?)).ok()?;
    let mut dev = NetDev {
        name: String::new(),
        ifindex,
        mac: [0; 6],
        mtu: 0,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        rx_queues: 1,
    };
    for (kind, value) in attributes(payload, IFINFOMSG_LEN) {
        match kind {
            IFLA_IFNAME => {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                dev.name = String::from_utf8_lossy(&value[..end]).into_owned();
            }
            IFLA_ADDRESS if value.len() == 6 => dev.mac.copy_from_slice(value),
            IFLA_MTU if value.len() == 4 => dev.mtu = u32::from_ne_bytes(value.try_into().ok()?),
            IFLA_NUM_RX_QUEUES if value.len() == 4 => {
                dev.rx_queues = u32::from_ne_bytes(value.try_into().ok()?).max(1);
            }
            _ => {}
        }
    }
    (!dev.name.is_empty()).then_some(dev)
}

/// Parses an `RTM_NEWADDR` payload into (interface index, address, prefix length) for IPv4.
pub fn parse_ipv4_address(payload: &[u8]) -> Option<(u32, Ipv4Addr, u8)> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    if i32::from(header[0]) != libc::AF_INET {
        return None;
    }
    let prefix = header[1];
    let ifindex = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    let mut address = None;
    let mut local = None;
    for (kind, value) in attributes(payload, IFADDRMSG_LEN) {
        let Ok(octets) = <[u8; 4]>::try_from(value) else {
            continue;
        };
        match kind {
            IFA_LOCAL => local = Some(Ipv4Addr::from(octets)),
            IFA_ADDRESS => address = Some(Ipv4Addr::from(octets)),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours when present.
    Some((ifindex, local.or(address)?, prefix))
}

/// Parses an `RTM_NEWADDR` payload into (interface index, address, prefix length) for IPv6.
/// Tentative addresses (duplicate address detection still running) are left out: the kernel
/// does not send from them yet.
pub fn parse_ipv6_address(payload: &[u8]) -> Option<(u32, Ipv6Addr, u8)> {
    const IFA_F_TENTATIVE: u8 = 0x40;
    let header = payload.get(..IFADDRMSG_LEN)?;
    if i32::from(header[0]) != libc::AF_INET6 || header[2] & IFA_F_TENTATIVE != 0 {
        return None;
    }
    let prefix = header[1];
    let ifindex = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    let mut address = None;
    let mut local = None;
    for (kind, value) in attributes(payload, IFADDRMSG_LEN) {
        let Ok(octets) = <[u8; 16]>::try_from(value) else {
            continue;
        };
        match kind {
            IFA_LOCAL => local = Some(Ipv6Addr::from(octets)),
            IFA_ADDRESS => address = Some(Ipv6Addr::from(octets)),
            _ => {}
        }
    }
    Some((ifindex, local.or(address)?, prefix))
}

fn link_by_name(socket: &mut RouteSocket, name: &str) -> io::Result<NetDev> {
    let seq = socket.next_seq();
    let mut found = None;
    socket.transact(&link_request(name, seq), seq, |m| {
        if m.kind == kind::NEW_LINK && found.is_none() {
            found = parse_link(m.payload);
        }
    })?;
    found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
}

fn ipv4_addresses(socket: &mut RouteSocket, ifindex: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
    addresses(socket, ifindex, libc::AF_INET, parse_ipv4_address)
}

fn ipv6_addresses(socket: &mut RouteSocket, ifindex: u32) -> io::Result<Vec<(Ipv6Addr, u8)>> {
    addresses(socket, ifindex, libc::AF_INET6, parse_ipv6_address)
}

/// Reads an `RTM_NEWADDR` payload into (ifindex, address, prefix length).
type ParseAddress<A> = fn(&[u8]) -> Option<(u32, A, u8)>;

/// The addresses of one family on `ifindex`, with their prefix lengths (one `RTM_GETADDR`
/// dump; `parse` reads a message of that family into (ifindex, address, prefix)).
fn addresses<A>(
    socket: &mut RouteSocket,
    ifindex: u32,
    family: libc::c_int,
    parse: ParseAddress<A>,
) -> io::Result<Vec<(A, u8)>> {
    let seq = socket.next_seq();
    let mut header = [0u8; IFADDRMSG_LEN];
    header[0] = family as u8;
    let request =
        netlink::Request::new(kind::GET_ADDR, flags::REQUEST | flags::DUMP, seq, &header).finish();
    let mut found = Vec::new();
    socket.transact(&request, seq, |m| {
        if m.kind != kind::NEW_ADDR {
            return;
        }
        if let Some((index, addr, prefix)) = parse(m.payload)
            && index == ifindex
        {
            found.push((addr, prefix));
        }
    })?;
    Ok(found)
}

/// Active RX channels from `ETHTOOL_GCHANNELS` (NICs report combined channels, veth plain RX
/// ones); None when the driver does not say.
fn ethtool_rx_channels(name: &str) -> Option<u32> {
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolChannels,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut channels,
        _pad: [0; 16],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket(2), checked below and closed at the end.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL reads `request` (a NUL-terminated name and a pointer to a writable
    // `ethtool_channels`), both alive for the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut request as *mut IfReq) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    let active = channels.rx_count.max(channels.combined_count);
    (rc == 0 && active > 0).then_some(active)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWLINK` payload as the kernel sends it for a veth (x86-64, trimmed to the
    /// attributes xvs reads plus one it ignores).
    const VETH_LINK: &[u8] = &[
        0x00, 0x00, 0x01, 0x00, // family, pad, type ARPHRD_ETHER
        0x07, 0x00, 0x00, 0x00, // ifindex 7
        0x43, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // flags, change
        0x0a, 0x00, 0x03, 0x00, b'x', b'v', b'0', b'a', b'b', 0x00, 0x00, 0x00, // IFLA_IFNAME
        0x08, 0x00, 0x04, 0x00, 0xdc, 0x05, 0x00, 0x00, // IFLA_MTU 1500
        0x08, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, // IFLA_PROMISCUITY (ignored)
        0x08, 0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x00, // IFLA_NUM_RX_QUEUES 2
        0x0a, 0x00, 0x01, 0x00, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00,
        0x00, // IFLA_ADDRESS
    ];

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn parses_a_link_message() {
        let dev = parse_link(VETH_LINK).unwrap();
        assert_eq!(dev.name, "xv0ab");
        assert_eq!(dev.ifindex, 7);
        assert_eq!(dev.mtu, 1500);
        assert_eq!(dev.mac, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(dev.rx_queues, 2);
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn reads_the_link_flags() {
        // 0x11043: UP | BROADCAST | RUNNING | MULTICAST | LOWER_UP.
        assert_eq!(link_flags(VETH_LINK), Some(0x0001_1043));
        assert_eq!(link_flags(&VETH_LINK[..10]), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn address_requests_are_ip_addrs_bytes() {
        // What `ip addr add 172.16.21.10/32 dev <ifindex 9>` sends, header seq 5.
        let add = address_request(true, 9, Ipv4Addr::new(172, 16, 21, 10), 32, 5);
        assert_eq!(
            add,
            [
                0x28, 0, 0, 0, 20, 0, 0x05, 0x05, 5, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
                2, 32, 0, 0, 9, 0, 0, 0, // ifaddrmsg: AF_INET, /32, ifindex 9
                8, 0, 2, 0, 172, 16, 21, 10, // IFA_LOCAL
                8, 0, 1, 0, 172, 16, 21, 10, // IFA_ADDRESS
            ]
        );
        let del = address_request(false, 9, Ipv4Addr::new(172, 16, 21, 10), 32, 6);
        assert_eq!(&del[4..8], &[21, 0, 0x05, 0x00], "RTM_DELADDR, REQUEST|ACK");
        assert_eq!(&del[16..], &add[16..]);
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn parses_an_ipv4_address_message() {
        let payload = [
            0x02, 0x18, 0x80, 0x00, 0x07, 0x00, 0x00,
            0x00, // AF_INET, /24, flags, scope, ifindex 7
            0x08, 0x00, 0x01, 0x00, 10, 1, 2, 3, // IFA_ADDRESS
            0x08, 0x00, 0x02, 0x00, 10, 1, 2, 3, // IFA_LOCAL
        ];
        assert_eq!(
            parse_ipv4_address(&payload),
            Some((7, Ipv4Addr::new(10, 1, 2, 3), 24))
        );
        let mut ipv6 = payload;
        ipv6[0] = 10;
        assert_eq!(parse_ipv4_address(&ipv6), None);
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn parses_an_ipv6_address_message_and_skips_tentative_ones() {
        let v6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let mut payload = vec![10, 64, 0x80, 0, 7, 0, 0, 0]; // AF_INET6, /64, PERMANENT
        payload.extend_from_slice(&[20, 0, 1, 0]);
        payload.extend_from_slice(&v6.octets());
        assert_eq!(parse_ipv6_address(&payload), Some((7, v6, 64)));
        assert_eq!(parse_ipv4_address(&payload), None);
        let mut tentative = payload.clone();
        tentative[2] |= 0x40;
        assert_eq!(parse_ipv6_address(&tentative), None);
        for len in 0..payload.len() {
            let _ = parse_ipv6_address(&payload[..len]);
        }
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn truncated_messages_are_refused() {
        for len in 0..IFINFOMSG_LEN {
            assert_eq!(parse_link(&VETH_LINK[..len]), None);
        }
        assert_eq!(parse_ipv4_address(&[2, 24, 0]), None);
        // Every prefix parses or is refused without panicking.
        for len in 0..VETH_LINK.len() {
            let _ = parse_link(&VETH_LINK[..len]);
        }
    }

    #[test]
    #[cfg(target_endian = "little")] // literal bytes of an x86-64 kernel
    fn the_link_request_asks_by_name() {
        let request = link_request("lo", 9);
        assert_eq!(request.len(), 16 + 16 + 8);
        assert_eq!(&request[4..6], &kind::GET_LINK.to_ne_bytes());
        assert_eq!(&request[32..40], &[7, 0, 3, 0, b'l', b'o', 0, 0]);
    }

    #[test]
    fn loopback_is_found_in_this_namespace() {
        let lo = NetDev::by_name("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert!(lo.ipv4.contains(&(Ipv4Addr::LOCALHOST, 8)), "{lo:?}");
        assert!(NetDev::by_name("xvs-no-such-if").is_err());
    }
}
