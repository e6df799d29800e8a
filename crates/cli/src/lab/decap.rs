//! The TUN lab's decapsulator, run on each real server (`xvs lab-decap`).
//!
//! This machine's kernel has no `ipip`, `sit` or `ip6_tunnel` module, so a real server
//! cannot terminate xvs's tunnels itself. The helper does what those would: a raw socket for
//! the tunnel's protocol on the real server's interface receives the tunnelled packets the
//! kernel delivers to this server, the helper checks each outer header and writes the inner
//! datagram into a TUN device, from where the kernel delivers it to the VIP on `lo` like any
//! received packet. The real server's TCP stack answers the client directly, as in a real
//! TUN cluster. Because a socket takes the protocol, the kernel no longer answers tunnelled
//! packets with ICMP "protocol unreachable" (which the director would rightly relay to the
//! client, as IPVS does with any error about its tunnels, and which would abort the
//! client's connection).
//!
//! One decapsulator takes one [`Tunnel`] kind: the outer family is `--source`'s and
//! `--me`'s (which must agree), the inner family `--inner`'s (by default the outer's). So
//! IPIP, IPv6-in-IPv6, and the mixed-family tunnels IPVS allows (IPv4-in-IPv6 toward an
//! IPv6 real server, IPv6-in-IPv4 toward an IPv4 one) each run as their own process, with
//! their own TUN device and report.
//!
//! It checks every outer header as a test would, against what xvs writes
//! (`forwarders/src/tun.rs`): [`check_outer`] for an IPv4 outer header (version/IHL,
//! header checksum, protocol 4 or 41, tunnel source and destination, not a fragment, total
//! length consistent with one whole inner datagram, DF copied from an IPv4 inner header and
//! clear over IPv6, TOS and TTL the inner traffic class and hop limit), [`check_outer6`]
//! for an IPv6 one, which a raw IPv6 socket does not hand over: the kernel tells its
//! source, destination, hop limit, traffic class and flow label beside the payload
//! ([`Outer6`]). Counts go to a report file (`key value` lines) rewritten after each packet,
//! so tests can read them while it runs.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use xvs_forwarders::wire::{
    IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN, Ipv4Packet, Ipv6Packet, protocol,
};

/// The tunnels xvs sends, by outer and inner family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// IPv4 in IPv4 (protocol 4).
    Ipip,
    /// IPv6 in IPv6 (next header 41).
    Ip6ip6,
    /// IPv4 in IPv6 (next header 4), toward an IPv6 real server of an IPv4 service.
    Ip4in6,
    /// IPv6 in IPv4 (protocol 41), toward an IPv4 real server of an IPv6 service.
    Ip6in4,
}

impl Tunnel {
    /// Every kind, as a dual-stack TUN lab's real servers take them.
    pub const ALL: [Tunnel; 4] = [Tunnel::Ipip, Tunnel::Ip6ip6, Tunnel::Ip4in6, Tunnel::Ip6in4];

    /// The kind with these outer and inner families.
    pub fn new(outer_ipv6: bool, inner_ipv6: bool) -> Tunnel {
        match (outer_ipv6, inner_ipv6) {
            (false, false) => Tunnel::Ipip,
            (true, true) => Tunnel::Ip6ip6,
            (true, false) => Tunnel::Ip4in6,
            (false, true) => Tunnel::Ip6in4,
        }
    }

    /// The outer header is IPv6.
    pub fn outer_ipv6(self) -> bool {
        matches!(self, Tunnel::Ip6ip6 | Tunnel::Ip4in6)
    }

    /// The inner datagram is IPv6.
    pub fn inner_ipv6(self) -> bool {
        matches!(self, Tunnel::Ip6ip6 | Tunnel::Ip6in4)
    }

    /// The outer protocol (next header): the inner datagram's family, 4 or 41.
    pub fn protocol(self) -> u8 {
        if self.inner_ipv6() {
            protocol::IPV6
        } else {
            protocol::IPIP
        }
    }

    /// A short name for files and devices: `ipip`, `6in6`, `4in6`, `6in4`.
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::Ipip => "ipip",
            Tunnel::Ip6ip6 => "6in6",
            Tunnel::Ip4in6 => "4in6",
            Tunnel::Ip6in4 => "6in4",
        }
    }
}

/// What the decapsulator saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecapReport {
    /// Tunnelled packets whose outer header was right, delivered to the TUN device.
    pub decapsulated: u64,
    /// Tunnelled packets with a wrong outer header (not delivered).
    pub bad_outer: u64,
}

impl DecapReport {
    /// Parses a report file's text.
    pub fn parse(text: &str) -> DecapReport {
        let mut report = DecapReport::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next().and_then(|v| v.parse().ok())) {
                (Some("decapsulated"), Some(n)) => report.decapsulated = n,
                (Some("bad_outer"), Some(n)) => report.bad_outer = n,
                _ => {}
            }
        }
        report
    }
}

/// The inner datagram's fields that xvs copies into the outer header.
struct Inner {
    /// TTL or hop limit, after the director's decrement: the outer TTL or hop limit.
    hops: u8,
    /// TOS or traffic class: the outer one.
    class: u8,
    /// The outer DF: the inner one for IPv4, clear over IPv6 (IPVS sets none there).
    dont_frag: bool,
}

/// Checks that `datagram` is one whole IPv4 (with `ipv6`, IPv6) packet, its header
/// length matching what arrived; the fields its outer header must carry.
fn inner_fields(datagram: &[u8], ipv6: bool) -> Option<Inner> {
    if ipv6 {
        let ip = Ipv6Packet::new_checked(datagram).ok()?;
        (IPV6_HEADER_LEN + usize::from(ip.payload_len()) == datagram.len()).then(|| Inner {
            hops: ip.hop_limit(),
            class: ip.traffic_class(),
            dont_frag: false,
        })
    } else {
        let ip = Ipv4Packet::new_checked(datagram).ok()?;
        (usize::from(ip.total_len()) == datagram.len()).then(|| Inner {
            hops: ip.ttl(),
            class: ip.tos(),
            dont_frag: ip.dont_frag(),
        })
    }
}

/// Checks a tunnelled packet with an IPv4 outer header (IPIP, or with `inner_ipv6`
/// IPv6-in-IPv4) as a raw IPv4 socket gives it, outer header included; returns the inner
/// datagram when every outer field is what xvs writes.
pub fn check_outer(
    packet: &[u8],
    tunnel_source: Ipv4Addr,
    me: Ipv4Addr,
    inner_ipv6: bool,
) -> Option<&[u8]> {
    let outer = Ipv4Packet::new_checked(packet).ok()?;
    // xvs sends its outer header without options, never fragmented.
    if outer.header_len() != IPV4_MIN_HEADER_LEN
        || outer.protocol() != Tunnel::new(false, inner_ipv6).protocol()
        || usize::from(outer.total_len()) != packet.len()
        || outer.more_frags()
        || outer.frag_offset() != 0
    {
        return None;
    }
    let inner = outer.into_payload();
    let fields = inner_fields(inner, inner_ipv6)?;
    (outer.verify_checksum()
        && outer.src_addr() == tunnel_source
        && outer.dst_addr() == me
        && outer.dont_frag() == fields.dont_frag
        && outer.ttl() == fields.hops
        && outer.tos() == fields.class)
        .then_some(inner)
}

/// An IPv6 outer header as a raw IPv6 socket tells it beside the payload (ancillary data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer6 {
    /// Source (the socket's peer address).
    pub src: Ipv6Addr,
    /// Destination (`IPV6_PKTINFO`).
    pub dst: Ipv6Addr,
    /// Hop limit (`IPV6_HOPLIMIT`).
    pub hop_limit: u8,
    /// Traffic class (`IPV6_TCLASS`).
    pub traffic_class: u8,
    /// Flow label (`IPV6_FLOWINFO`, which the kernel leaves out when it is 0).
    pub flow_label: u32,
}

/// Checks a tunnelled packet with an IPv6 outer header (IPv4-in-IPv6, or with
/// `inner_ipv6` IPv6-in-IPv6) as a raw IPv6 socket gives it: `inner` is the payload after
/// the outer header, `outer` what the kernel told of that header. Source and destination
/// must be the tunnel's, the hop limit and traffic class the inner ones, the flow label 0,
/// and the payload one whole inner datagram. Returns the inner datagram.
pub fn check_outer6<'a>(
    inner: &'a [u8],
    outer: &Outer6,
    tunnel_source: Ipv6Addr,
    me: Ipv6Addr,
    inner_ipv6: bool,
) -> Option<&'a [u8]> {
    let fields = inner_fields(inner, inner_ipv6)?;
    (outer.src == tunnel_source
        && outer.dst == me
        && outer.hop_limit == fields.hops
        && outer.traffic_class == fields.class
        && outer.flow_label == 0)
        .then_some(inner)
}

/// Opens TUN device `name` (no packet information header) and brings it up.
fn open_tun(name: &str) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut request = [0u8; 40]; // struct ifreq: name[16], flags (short) at 16
    let bytes = name.as_bytes();
    if bytes.len() >= 16 {
        return Err(std::io::Error::other("tun device name too long"));
    }
    request[..bytes.len()].copy_from_slice(bytes);
    let flags: i16 = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    request[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes on Linux), which
    // `request` is, for the lifetime of the call; the fd is a valid open /dev/net/tun.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, request.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let up = std::process::Command::new("ip")
        .args(["link", "set", name, "up"])
        .status()?;
    if !up.success() {
        return Err(std::io::Error::other("cannot bring the tun device up"));
    }
    Ok(file)
}

/// A raw socket of `tunnel`'s outer family for its protocol, bound to `iface`: it receives
/// every such packet delivered to this host. IPv4 hands over the outer header; IPv6 only
/// the payload, so the socket also asks for the outer header's fields ([`Outer6`]).
fn open_raw(tunnel: Tunnel, iface: &str) -> std::io::Result<OwnedFd> {
    let family = if tunnel.outer_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let protocol = libc::c_int::from(tunnel.protocol());
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created socket we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        iface.as_bytes(),
    )?;
    if tunnel.outer_ipv6() {
        let on = 1 as libc::c_int;
        for option in [
            libc::IPV6_RECVPKTINFO,
            libc::IPV6_RECVHOPLIMIT,
            libc::IPV6_RECVTCLASS,
            libc::IPV6_FLOWINFO,
        ] {
            set_option(&socket, libc::IPPROTO_IPV6, option, &on.to_ne_bytes())?;
        }
    }
    Ok(socket)
}

/// setsockopt(2) with `value`'s bytes.
fn set_option(
    socket: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `value.len()` bytes from `value`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one packet from the IPv4 raw socket: its length.
fn recv4(socket: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives one packet from the IPv6 raw socket: its length and the outer header's fields
/// (none when the kernel's ancillary data lacks one of them or did not fit).
fn recv6(socket: &OwnedFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<Outer6>)> {
    let mut from: libc::sockaddr_in6 = zeroed_sockaddr_in6();
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `from`, `iov` (over `buf`) and `control`, all valid for the
    // lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (mut to, mut hop_limit, mut traffic_class, mut flow_label) = (None, None, None, 0);
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; each payload is read unaligned as the type the kernel documents for
    // it (`struct in6_pktinfo`, an int, an int, a big-endian 32-bit flow information).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    to = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    hop_limit = u8::try_from(data.cast::<libc::c_int>().read_unaligned()).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    let class = data.cast::<libc::c_int>().read_unaligned();
                    traffic_class = u8::try_from(class).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_FLOWINFO) => {
                    let info = u32::from_be(data.cast::<u32>().read_unaligned());
                    flow_label = info & 0x000f_ffff;
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let complete = msg.msg_flags & libc::MSG_CTRUNC == 0;
    let outer = match (to, hop_limit, traffic_class) {
        (Some(dst), Some(hop_limit), Some(traffic_class)) if complete => Some(Outer6 {
            src: Ipv6Addr::from(from.sin6_addr.s6_addr),
            dst,
            hop_limit,
            traffic_class,
            flow_label,
        }),
        _ => None,
    };
    Ok((n as usize, outer))
}

fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    // SAFETY: an all-zero sockaddr_in6 is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Runs the decapsulator until killed: packets on `iface` tunnelled from `tunnel_source` to
/// `me` (both IPv4 or both IPv6: the outer family) around an inner datagram of IPv6 if
/// `inner_ipv6`, IPv4 if not (by default the outer family) go into TUN device `tun_name`
/// (created and brought up here).
pub fn run(
    iface: &str,
    tun_name: &str,
    tunnel_source: IpAddr,
    me: IpAddr,
    inner_ipv6: Option<bool>,
    report: &Path,
) -> std::io::Result<()> {
    match (tunnel_source, me) {
        (IpAddr::V4(source), IpAddr::V4(me)) => {
            let inner_ipv6 = inner_ipv6.unwrap_or(false);
            let socket = open_raw(Tunnel::new(false, inner_ipv6), iface)?;
            decapsulate(tun_name, report, |buf| {
                let n = recv4(&socket, buf)?;
                Ok(check_outer(&buf[..n], source, me, inner_ipv6))
            })
        }
        (IpAddr::V6(source), IpAddr::V6(me)) => {
            let inner_ipv6 = inner_ipv6.unwrap_or(true);
            let socket = open_raw(Tunnel::new(true, inner_ipv6), iface)?;
            decapsulate(tun_name, report, |buf| {
                let (n, outer) = recv6(&socket, buf)?;
                Ok(outer.and_then(|o| check_outer6(&buf[..n], &o, source, me, inner_ipv6)))
            })
        }
        _ => Err(std::io::Error::other(
            "--source and --me of different families",
        )),
    }
}

/// The loop of [`run`]: `receive` fills the buffer with one tunnelled packet and returns its
/// inner datagram if the outer header was right; that goes into TUN device `tun_name`, and
/// the report counts it.
fn decapsulate<F>(tun_name: &str, report: &Path, mut receive: F) -> std::io::Result<()>
where
    F: FnMut(&mut [u8]) -> std::io::Result<Option<&[u8]>>,
{
    let mut tun = open_tun(tun_name)?;
    let mut counts = DecapReport::default();
    let mut buf = vec![0u8; 65536];
    write_report(report, &counts)?;
    loop {
        match receive(&mut buf) {
            Ok(Some(inner)) => {
                tun.write_all(inner)?;
                counts.decapsulated += 1;
            }
            Ok(None) => counts.bad_outer += 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        write_report(report, &counts)?;
    }
}

/// Replaces the report file at once (write beside it, then rename), so a reader never sees
/// half of it. The temporary name extends the report's, so decapsulators of one server
/// never share it.
fn write_report(path: &Path, counts: &DecapReport) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(
        &tmp,
        format!(
            "decapsulated {}\nbad_outer {}\n",
            counts.decapsulated, counts.bad_outer
        ),
    )?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SOURCE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const ME6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    /// A 28-byte IPv4 UDP datagram as it leaves the director: TTL 63, TOS 0x10.
    fn ipv4_datagram(dont_frag: bool) -> Vec<u8> {
        let mut datagram = vec![0u8; 28];
        let mut ip = Ipv4Packet::new_unchecked(&mut datagram[..]);
        ip.set_version(4);
        ip.set_header_len(IPV4_MIN_HEADER_LEN);
        ip.set_tos(0x10);
        ip.set_total_len(28);
        ip.set_ident(1);
        ip.set_dont_frag(dont_frag);
        ip.set_ttl(63);
        ip.set_protocol(protocol::UDP);
        ip.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        ip.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        ip.fill_checksum();
        datagram
    }

    /// A 48-byte IPv6 UDP datagram as it leaves the director: hop limit 63, traffic class
    /// 0x28, a flow label of the client's.
    fn ipv6_datagram() -> Vec<u8> {
        let mut datagram = vec![0u8; 48];
        let mut ip = Ipv6Packet::new_unchecked(&mut datagram[..]);
        ip.set_version(6);
        ip.set_traffic_class(0x28);
        ip.set_flow_label(0x12345);
        ip.set_payload_len(8);
        ip.set_next_header(protocol::UDP);
        ip.set_hop_limit(63);
        ip.set_src_addr("2001:db8::1".parse().unwrap());
        ip.set_dst_addr("2001:db8::2".parse().unwrap());
        datagram
    }

    /// `inner` behind the IPv4 outer header xvs writes: protocol 4 or 41, TOS and TTL
    /// the inner ones, DF the inner one (clear over IPv6).
    fn outer4(inner: &[u8], inner_ipv6: bool) -> Vec<u8> {
        let fields = inner_fields(inner, inner_ipv6).unwrap();
        let mut packet = vec![0u8; IPV4_MIN_HEADER_LEN];
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_version(4);
        ip.set_header_len(IPV4_MIN_HEADER_LEN);
        ip.set_tos(fields.class);
        ip.set_total_len((IPV4_MIN_HEADER_LEN + inner.len()) as u16);
        ip.set_ident(9);
        ip.set_dont_frag(fields.dont_frag);
        ip.set_ttl(fields.hops);
        ip.set_protocol(Tunnel::new(false, inner_ipv6).protocol());
        ip.set_src_addr(SOURCE);
        ip.set_dst_addr(ME);
        ip.fill_checksum();
        packet.extend_from_slice(inner);
        packet
    }

    /// `packet` with `change` made to its outer header and the checksum filled again.
    fn changed(packet: &[u8], change: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
        let mut packet = packet.to_vec();
        let mut outer = Ipv4Packet::new_unchecked(&mut packet[..]);
        change(&mut outer);
        outer.fill_checksum();
        packet
    }

    /// Every way an IPv4 outer header can differ from what xvs writes, for a good packet
    /// `good` whose inner datagram is IPv6 with `inner_ipv6`.
    fn assert_ipv4_outer_checked(good: &[u8], inner_ipv6: bool) {
        let check = |p: &[u8]| check_outer(p, SOURCE, ME, inner_ipv6).map(<[u8]>::len);
        assert_eq!(check(good), Some(good.len() - IPV4_MIN_HEADER_LEN));
        assert!(
            check_outer(good, SOURCE, SOURCE, inner_ipv6).is_none(),
            "not for me"
        );
        assert!(
            check_outer(good, ME, ME, inner_ipv6).is_none(),
            "wrong tunnel source"
        );
        assert!(
            check_outer(good, SOURCE, ME, !inner_ipv6).is_none(),
            "other tunnel"
        );
        let mut bad_sum = good.to_vec();
        bad_sum[8] ^= 1;
        let dont_frag = Ipv4Packet::new_unchecked(good).dont_frag();
        let mut trailing = changed(good, |_| {});
        trailing.push(0);
        let mut long_inner = good.to_vec();
        long_inner.push(0);
        let faults: [(&str, Vec<u8>); 10] = [
            ("checksum", bad_sum),
            ("DF", changed(good, |o| o.set_dont_frag(!dont_frag))),
            ("TTL", changed(good, |o| o.set_ttl(o.ttl() + 1))),
            ("TOS", changed(good, |o| o.set_tos(o.tos() ^ 4))),
            ("protocol", changed(good, |o| o.set_protocol(protocol::UDP))),
            ("fragment", changed(good, |o| o.set_more_frags(true))),
            ("total length", trailing),
            (
                "inner length",
                changed(&long_inner, |o| o.set_total_len(o.total_len() + 1)),
            ),
            ("options", changed(good, |o| o.set_header_len(24))),
            ("truncated", good[..30].to_vec()),
        ];
        for (fault, packet) in faults {
            assert!(check(&packet).is_none(), "{fault} not refused");
        }
    }

    #[test]
    fn ipip_outer_headers_are_checked_field_by_field() {
        assert_ipv4_outer_checked(&outer4(&ipv4_datagram(true), false), false);
        assert_ipv4_outer_checked(&outer4(&ipv4_datagram(false), false), false);
    }

    #[test]
    fn ipv6_in_ipv4_outer_headers_are_checked_field_by_field() {
        let good = outer4(&ipv6_datagram(), true);
        assert!(!Ipv4Packet::new_unchecked(&good[..]).dont_frag());
        assert_ipv4_outer_checked(&good, true);
    }

    /// What the kernel tells of the outer IPv6 header xvs writes around `inner`.
    fn outer6(inner: &[u8], inner_ipv6: bool) -> Outer6 {
        let fields = inner_fields(inner, inner_ipv6).unwrap();
        Outer6 {
            src: SOURCE6,
            dst: ME6,
            hop_limit: fields.hops,
            traffic_class: fields.class,
            flow_label: 0,
        }
    }

    #[test]
    fn ipv6_outer_headers_are_checked_for_both_inner_families() {
        for (inner, inner_ipv6) in [(ipv4_datagram(true), false), (ipv6_datagram(), true)] {
            let good = outer6(&inner, inner_ipv6);
            let check = |p: &[u8], o: &Outer6| {
                check_outer6(p, o, SOURCE6, ME6, inner_ipv6).map(<[u8]>::len)
            };
            assert_eq!(check(&inner, &good), Some(inner.len()));
            let faults = [
                ("wrong tunnel source", Outer6 { src: ME6, ..good }),
                (
                    "not for me",
                    Outer6 {
                        dst: SOURCE6,
                        ..good
                    },
                ),
                (
                    "hop limit",
                    Outer6 {
                        hop_limit: good.hop_limit + 1,
                        ..good
                    },
                ),
                (
                    "traffic class",
                    Outer6 {
                        traffic_class: good.traffic_class ^ 4,
                        ..good
                    },
                ),
                (
                    "flow label",
                    Outer6 {
                        flow_label: 1,
                        ..good
                    },
                ),
            ];
            for (fault, outer) in faults {
                assert!(check(&inner, &outer).is_none(), "{fault} not refused");
            }
            let mut long = inner.clone();
            long.push(0);
            assert!(check(&long, &good).is_none(), "inner length");
            assert!(check(&inner[..20], &good).is_none(), "truncated");
            assert!(
                check_outer6(&inner, &good, SOURCE6, ME6, !inner_ipv6).is_none(),
                "other inner family"
            );
        }
    }

    #[test]
    fn tunnel_kinds_follow_the_families() {
        for tunnel in Tunnel::ALL {
            assert_eq!(
                Tunnel::new(tunnel.outer_ipv6(), tunnel.inner_ipv6()),
                tunnel
            );
        }
        assert_eq!(Tunnel::Ip4in6.protocol(), protocol::IPIP);
        assert_eq!(Tunnel::Ip6in4.protocol(), protocol::IPV6);
    }

    #[test]
    fn report_round_trips() {
        let text = "decapsulated 7\nbad_outer 1\n";
        assert_eq!(
            DecapReport::parse(text),
            DecapReport {
                decapsulated: 7,
                bad_outer: 1
            }
        );
    }
}
