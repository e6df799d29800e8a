//! The TUN lab's IPIP decapsulator, run on each real server (`xvs lab-decap`).
//!
//! This machine's kernel has no `ipip` module, so a real server cannot terminate xvs's
//! tunnels itself. The helper does what `ipip` would: a raw socket for protocol 4 (IP-in-IP)
//! on the real server's interface receives the tunnelled packets the kernel delivers to this
//! server, the helper checks each outer header and writes the inner datagram into a TUN
//! device, from where the kernel delivers it to the VIP on `lo` like any received packet. The
//! real server's TCP stack answers the client directly, as in a real TUN cluster. Because a
//! socket takes protocol 4, the kernel no longer answers tunnelled packets with ICMP "protocol
//! unreachable" (which the director would rightly relay to the client, as IPVS does with any
//! error about its tunnels, and which would abort the client's connection).
//!
//! It also checks every outer header as a test would: version/IHL, header checksum,
//! protocol 4, the expected tunnel source and destination, total length consistent with the
//! inner datagram, DF copied from the inner header. Counts go to a report file (`key value`
//! lines) rewritten after each packet, so tests can read them while it runs.
//!
//! IPv6-in-IPv6 the same way (`--source` and `--me` IPv6 addresses): a raw IPv6 socket for
//! next header 41 receives the inner datagram (the kernel keeps the outer header, but tells
//! its source and destination), checked as [`check_outer6`] says, and written into the TUN
//! device.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use xvs_forwarders::wire::{IPV4_MIN_HEADER_LEN, Ipv4Packet, protocol};

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

/// Checks an IPIP packet's outer header; returns the inner datagram when it is right.
pub fn check_outer(packet: &[u8], tunnel_source: Ipv4Addr, me: Ipv4Addr) -> Option<&[u8]> {
    let outer = Ipv4Packet::new_checked(packet).ok()?;
    // xvs sends its outer header without options.
    if outer.header_len() != IPV4_MIN_HEADER_LEN || outer.protocol() != protocol::IPIP {
        return None;
    }
    let inner = outer.into_payload();
    let inner_header = Ipv4Packet::new_checked(inner).ok()?;
    (outer.verify_checksum()
        && outer.src_addr() == tunnel_source
        && outer.dst_addr() == me
        && usize::from(inner_header.total_len()) == inner.len()
        && outer.dont_frag() == inner_header.dont_frag())
    .then_some(inner)
}

/// Checks an IPv6-in-IPv6 packet as a raw IPv6 socket gives it: the outer source and
/// destination (from the socket) must be the tunnel's, and the inner datagram a whole IPv6
/// packet (version 6, payload length matching what arrived). Returns the inner datagram.
pub fn check_outer6(
    inner: &[u8],
    from: Ipv6Addr,
    to: Ipv6Addr,
    tunnel_source: Ipv6Addr,
    me: Ipv6Addr,
) -> Option<&[u8]> {
    let header = inner.get(..40)?;
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    (from == tunnel_source && to == me && header[0] >> 4 == 6 && payload_len + 40 == inner.len())
        .then_some(inner)
}

/// Opens TUN device `name` (no packet information header), up to the caller to configure.
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
    Ok(file)
}

/// A raw IPv4 socket for protocol 4 (IP-in-IP) bound to `iface`: it receives every tunnelled
/// packet delivered to this host, outer header included.
fn open_ipip_socket(iface: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = iface.as_bytes();
    // SAFETY: SO_BINDTODEVICE reads `name.len()` bytes of the interface name from `name`.
    let rc = unsafe {
        libc::setsockopt(
            owned.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// A raw IPv6 socket for next header 41 (IPv6-in-IPv6) bound to `iface`, telling each
/// packet's destination (`IPV6_RECVPKTINFO`).
fn open_ip6ip6_socket(iface: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_IPV6) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = iface.as_bytes();
    let on: libc::c_int = 1;
    // SAFETY: SO_BINDTODEVICE reads `name.len()` bytes of the interface name from `name`;
    // IPV6_RECVPKTINFO reads one int from `on`.
    let rc = unsafe {
        libc::setsockopt(
            owned.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        ) | libc::setsockopt(
            owned.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// Receives one packet from the IPv6 raw socket: its length, outer source and destination.
fn recv6(socket: &OwnedFd, buf: &mut [u8]) -> std::io::Result<(usize, Ipv6Addr, Ipv6Addr)> {
    let mut from: libc::sockaddr_in6 = zeroed_sockaddr_in6();
    let mut control = [0u64; 16];
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
    let mut to = Ipv6Addr::UNSPECIFIED;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; an IPV6_PKTINFO payload is a `struct in6_pktinfo`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IPV6 && (*cmsg).cmsg_type == libc::IPV6_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                to = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, Ipv6Addr::from(from.sin6_addr.s6_addr), to))
}

fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    // SAFETY: an all-zero sockaddr_in6 is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Runs the decapsulator until killed: packets on `iface` tunnelled from `tunnel_source` to
/// `me` (both IPv4: IPIP; both IPv6: IPv6-in-IPv6) go into TUN device `tun_name` (created
/// and brought up here).
pub fn run(
    iface: &str,
    tun_name: &str,
    tunnel_source: IpAddr,
    me: IpAddr,
    report: &Path,
) -> std::io::Result<()> {
    let mut tun = open_tun(tun_name)?;
    let up = std::process::Command::new("ip")
        .args(["link", "set", tun_name, "up"])
        .status()?;
    if !up.success() {
        return Err(std::io::Error::other("cannot bring the tun device up"));
    }
    let (tunnel_source, me) = match (tunnel_source, me) {
        (IpAddr::V4(source), IpAddr::V4(me)) => (source, me),
        (IpAddr::V6(source), IpAddr::V6(me)) => return run6(iface, &mut tun, source, me, report),
        _ => {
            return Err(std::io::Error::other(
                "--source and --me of different families",
            ));
        }
    };
    let socket = open_ipip_socket(iface)?;
    let mut counts = DecapReport::default();
    let mut buf = vec![0u8; 65536];
    write_report(report, &counts)?;
    loop {
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let packet = &buf[..n as usize];
        match check_outer(packet, tunnel_source, me) {
            Some(inner) => {
                tun.write_all(inner)?;
                counts.decapsulated += 1;
            }
            None => counts.bad_outer += 1,
        }
        write_report(report, &counts)?;
    }
}

/// [`run`] for IPv6-in-IPv6.
fn run6(
    iface: &str,
    tun: &mut File,
    tunnel_source: Ipv6Addr,
    me: Ipv6Addr,
    report: &Path,
) -> std::io::Result<()> {
    let socket = open_ip6ip6_socket(iface)?;
    let mut counts = DecapReport::default();
    let mut buf = vec![0u8; 65536];
    write_report(report, &counts)?;
    loop {
        let (n, from, to) = match recv6(&socket, &mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match check_outer6(&buf[..n], from, to, tunnel_source, me) {
            Some(inner) => {
                tun.write_all(inner)?;
                counts.decapsulated += 1;
            }
            None => counts.bad_outer += 1,
        }
        write_report(report, &counts)?;
    }
}

fn write_report(path: &Path, counts: &DecapReport) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
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

    /// An IPIP packet: outer 10.0.0.1 -> 10.0.0.2 around a 28-byte inner UDP datagram.
    fn ipip(df: bool) -> Vec<u8> {
        let mut inner = vec![
            0x45,
            0,
            0,
            28,
            0,
            1,
            if df { 0x40 } else { 0 },
            0,
            64,
            17,
            0,
            0,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
        ];
        inner.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let mut outer = vec![
            0x45,
            0,
            0,
            48,
            0,
            9,
            if df { 0x40 } else { 0 },
            0,
            63,
            4,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        Ipv4Packet::new_unchecked(&mut outer[..]).fill_checksum();
        outer.extend_from_slice(&inner);
        outer
    }

    #[test]
    fn accepts_a_correct_outer_header_and_refuses_each_fault() {
        let (src, me) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let good = ipip(true);
        assert_eq!(check_outer(&good, src, me).map(|i| i.len()), Some(28));
        assert!(
            check_outer(&good, src, Ipv4Addr::new(10, 0, 0, 3)).is_none(),
            "not for me"
        );
        assert!(check_outer(&good, me, me).is_none(), "wrong tunnel source");
        let mut bad_sum = good.clone();
        bad_sum[8] = 1;
        assert!(check_outer(&bad_sum, src, me).is_none(), "checksum");
        let mut df_lost = good.clone();
        let mut outer = Ipv4Packet::new_unchecked(&mut df_lost[..]);
        outer.set_dont_frag(false);
        outer.fill_checksum();
        assert!(check_outer(&df_lost, src, me).is_none(), "DF not copied");
        let mut not_ipip = good.clone();
        let mut outer = Ipv4Packet::new_unchecked(&mut not_ipip[..]);
        outer.set_protocol(protocol::UDP);
        outer.fill_checksum();
        assert!(check_outer(&not_ipip, src, me).is_none(), "not IPIP");
        let mut short_inner = good.clone();
        short_inner[20 + 3] = 27;
        assert!(check_outer(&short_inner, src, me).is_none(), "inner length");
        assert!(check_outer(&good[..30], src, me).is_none(), "truncated");
    }

    #[test]
    fn ipv6_inner_packets_are_checked_against_the_tunnel() {
        let (src, me): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut inner = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        inner.extend_from_slice(&[0u8; 32]);
        inner.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(
            check_outer6(&inner, src, me, src, me).map(<[u8]>::len),
            Some(48)
        );
        assert!(
            check_outer6(&inner, me, me, src, me).is_none(),
            "wrong tunnel source"
        );
        assert!(
            check_outer6(&inner, src, src, src, me).is_none(),
            "not for me"
        );
        assert!(
            check_outer6(&inner[..47], src, me, src, me).is_none(),
            "payload length"
        );
        let mut v4 = inner.clone();
        v4[0] = 0x45;
        assert!(
            check_outer6(&v4, src, me, src, me).is_none(),
            "not IPv6 inside"
        );
        assert!(
            check_outer6(&inner[..20], src, me, src, me).is_none(),
            "truncated"
        );
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
