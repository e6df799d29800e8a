//! Network namespaces joined by veth pairs for the frame-I/O tests, removed on drop.
//!
//! Every lab names its namespaces and interfaces after the process id and a counter, so tests
//! running side by side (and other engineers' labs) never meet; deleting a namespace deletes
//! its veth ends. Nothing here touches an address outside the namespaces it made.

#![allow(dead_code)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};

use xvs_forwarders::wire::{EthernetFrame, Ipv4Packet, UdpPacket, ethertype, protocol};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip`/`ethtool`/... and panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like `run`, but returns whether it succeeded.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tests need root (namespaces, XDP, AF_XDP): say so plainly instead of failing obscurely.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create namespaces, XDP programs and AF_XDP sockets: run as root"
    );
}

/// A set of namespaces deleted on drop (even when the test panics).
pub struct Lab {
    pub namespaces: Vec<String>,
    id: String,
}

/// One veth pair between two namespaces.
#[derive(Debug, Clone)]
pub struct Link {
    pub left_ns: String,
    pub left: String,
    pub right_ns: String,
    pub right: String,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Lab {
            namespaces: Vec::new(),
            id: format!("{}{}", std::process::id() % 100_000, n),
        }
    }

    /// Creates namespace `role` (its loopback up) and returns its name.
    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("xvsio-{}-{role}", self.id);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins two namespaces with a veth pair whose ends are named `xv<id><tag>l`/`r`, up, with
    /// the given addresses (CIDR), and transmit checksum offload off on both ends (so frames
    /// forwarded unchanged by AF_XDP carry complete checksums, as from a real NIC).
    pub fn veth(
        &mut self,
        tag: &str,
        left_ns: &str,
        left_cidr: &str,
        right_ns: &str,
        right_cidr: &str,
    ) -> Link {
        self.veth_with_queues(tag, left_ns, left_cidr, right_ns, right_cidr, 1)
    }

    /// Like `veth`, with `queues` RX and TX queues on each end.
    pub fn veth_with_queues(
        &mut self,
        tag: &str,
        left_ns: &str,
        left_cidr: &str,
        right_ns: &str,
        right_cidr: &str,
        queues: u32,
    ) -> Link {
        let left = format!("xv{}{tag}l", self.id);
        let right = format!("xv{}{tag}r", self.id);
        assert!(left.len() <= 15, "interface name too long: {left}");
        let q = queues.to_string();
        run(
            "ip",
            &[
                "link",
                "add",
                &left,
                "netns",
                left_ns,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &right,
                "netns",
                right_ns,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ],
        );
        for (ns, dev, cidr) in [(left_ns, &left, left_cidr), (right_ns, &right, right_cidr)] {
            run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run(
                "ip",
                &["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"],
            );
        }
        Link {
            left_ns: left_ns.into(),
            left,
            right_ns: right_ns.into(),
            right,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Enters namespace `ns` on the calling thread (network namespace only).
pub fn enter_netns(ns: &str) {
    let file = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
    // SAFETY: setns on a namespace fd we opened; CLONE_NEWNET changes only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
}

/// Runs `f` inside namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in(ns, f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Whether `ip link show` reports an XDP program on `dev` in `ns`.
pub fn has_xdp(ns: &str, dev: &str) -> bool {
    run("ip", &["-n", ns, "link", "show", "dev", dev]).contains("xdp")
}

/// The Internet checksum of `bytes` folded with `initial` (0 when `bytes` hold a correct one).
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    !xvs_forwarders::checksum::fold(xvs_forwarders::checksum::sum_words(
        bytes,
        u64::from(initial),
    ))
}

/// Offsets in an untagged Ethernet + IPv4 (no options) + UDP frame.
pub const IP: usize = 14;
pub const UDP: usize = 34;
pub const PAYLOAD: usize = 42;

/// An IPv4 header and the UDP datagram it carries.
type UdpViews<'a> = (Ipv4Packet<&'a [u8]>, UdpPacket<&'a [u8]>);

/// The IPv4 header (no options) and UDP datagram of an Ethernet frame, checked.
fn udp_views(frame: &[u8]) -> Option<UdpViews<'_>> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != ethertype::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(ethernet.into_payload()).ok()?;
    if ip.header_len() != IP_HEADER || ip.protocol() != protocol::UDP {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.into_payload()).ok()?;
    Some((ip, udp))
}

const IP_HEADER: usize = UDP - IP;

/// True when the IPv4 header and UDP checksums of `frame` are complete and correct.
pub fn checksums_ok(frame: &[u8]) -> bool {
    udp_views(frame).is_some_and(|(ip, udp)| {
        ip.verify_checksum()
            && udp.checksum() != 0
            && udp.verify_checksum(ip.src_addr(), ip.dst_addr())
    })
}

/// Recomputes the IPv4 header and UDP checksums of `frame` (after a test rewrote it).
pub fn fix_checksums(frame: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[IP..]);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    UdpPacket::new_unchecked(&mut frame[UDP..]).fill_checksum(src, dst);
}

/// (source, destination, source port, destination port, payload) of a UDP frame.
pub fn udp_fields(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
    let (ip, udp) = udp_views(frame)?;
    Some((
        ip.src_addr(),
        ip.dst_addr(),
        udp.src_port(),
        udp.dst_port(),
        udp.into_payload(),
    ))
}

/// Every frame the director side of a SYN filter test received, with when, and the
/// filter's counters at the end.
pub type SynFilterRun = (
    Vec<(std::time::Instant, Vec<u8>)>,
    xvs_dataplane::syn_filter::SynCounts,
);

/// The director side of a SYN filter test: on a thread in `ns`, the XDP filter on `dev` with
/// the VIPs `set_vips` writes and the SYN filter in force, an AF_XDP socket taking every
/// frame it is sent, until a message on `stop`. Returns once the filter is in place.
pub fn syn_filter_director(
    ns: &str,
    dev: &str,
    set_vips: impl FnOnce(&mut xvs_dataplane::xdp::XdpFilter) + Send + 'static,
    stop: std::sync::mpsc::Receiver<()>,
) -> JoinHandle<SynFilterRun> {
    use std::time::{Duration, Instant};
    use xvs_dataplane::afxdp::{AfXdpPorts, XskConfig};
    use xvs_dataplane::packet_io::PacketIo;
    use xvs_dataplane::xdp::{AttachMode, XdpFilter};

    let dev = dev.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = spawn_in(ns, move || {
        let netdev = xvs_dataplane::netdev::NetDev::by_name(&dev).unwrap();
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        set_vips(&mut filter);
        let mut syn = filter.take_syn_filter().expect("the SYN filter's maps");
        assert!(filter.take_syn_filter().is_none(), "taken once");
        syn.set(true).unwrap();
        ready_tx.send(()).unwrap();
        let mut received = Vec::new();
        while stop.try_recv().is_err() {
            ports
                .poll(64, &mut |_, frames, _| {
                    let now = Instant::now();
                    received.extend(frames.iter().map(|f| (now, f.data().to_vec())));
                })
                .unwrap();
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        (received, syn.counts().unwrap())
    });
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => panic!("director thread ended before it was ready"),
        }
    }
    worker
}
