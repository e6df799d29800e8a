//! Local real servers: a real server whose address is the director's own (IPVS `Local`,
//! `IP_VS_CONN_F_LOCALNODE`; CTDB's LVS adds `-r 127.0.0.1`) is served by the director's own
//! kernel.
//!
//! The XDP filter has already taken the frame from the kernel when the scheduler picks a
//! local server, so xvs hands the IP packet back through a TUN device: written unchanged
//! (still addressed to VIP:port, as IPVS delivers it), it enters the kernel's input path as
//! if received, and the local listener answers the client directly. This is the director's
//! exception path, like DPDK's KNI; it costs one `write` per packet, and only packets for a
//! local server take it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

/// The TUN device's name.
pub const DEVICE: &str = "xvslocal0";

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// The TUN device packets for local real servers go through.
#[derive(Debug)]
pub struct LocalDelivery {
    tun: File,
}

/// `struct ifreq` with the flags member, as TUNSETIFF and SIOC[GS]IFFLAGS read it.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_short) -> IfReq {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    for (dst, src) in req
        .name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

impl LocalDelivery {
    /// Creates (or attaches to) the TUN device, brings it up and turns reverse-path
    /// filtering off on it (the client's address routes via another interface).
    pub fn open() -> io::Result<LocalDelivery> {
        let tun = open_tun(DEVICE)?;
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{DEVICE}/rp_filter"), "0")?;
        Ok(LocalDelivery { tun })
    }

    /// Hands one IPv4 packet (no Ethernet header) to the kernel.
    #[inline]
    pub fn deliver(&self, packet: &[u8]) -> io::Result<()> {
        (&self.tun).write(packet).map(|_| ())
    }
}

/// Creates TUN device `name` (or attaches to it) and brings it up. The device is not
/// persistent: it vanishes, with its addresses, when the returned file is closed, also when
/// the process dies.
pub fn open_tun(name: &str) -> io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = ifreq(name, IFF_TUN | IFF_NO_PI);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` at the pointer, which is a
    // live, properly sized and aligned local; the fd is the open /dev/net/tun.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    set_up(name)?;
    Ok(tun)
}

/// Sets `IFF_UP` on interface `name`.
fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: a plain datagram socket; its fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = ifreq(name, 0);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one `struct ifreq` at the pointer, a
    // live local of the right size; `sock` is the socket opened above.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req as *mut IfReq) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req as *mut IfReq) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closes the socket this function opened, once.
    unsafe { libc::close(sock) };
    result
}

/// Whether `addr` is the director's own: a loopback address or one of `locals` (its
/// interfaces' addresses). IPVS marks such a real server `Local`.
pub fn is_local(addr: Ipv4Addr, mut locals: impl Iterator<Item = Ipv4Addr>) -> bool {
    addr.is_loopback() || locals.any(|a| a == addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_own_addresses_are_local() {
        let own = [Ipv4Addr::new(192, 168, 40, 11)];
        assert!(is_local(Ipv4Addr::new(127, 0, 0, 1), own.into_iter()));
        assert!(is_local(Ipv4Addr::new(192, 168, 40, 11), own.into_iter()));
        assert!(!is_local(Ipv4Addr::new(192, 168, 40, 12), own.into_iter()));
    }

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let r = ifreq(DEVICE, 7);
        assert_eq!(
            r.name[..DEVICE.len()]
                .iter()
                .map(|&c| c as u8)
                .collect::<Vec<_>>(),
            DEVICE.as_bytes()
        );
        assert_eq!(r.name[DEVICE.len()], 0);
    }
}
