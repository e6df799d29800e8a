//! The XDP filter's IPv6 half on a veth pair between namespaces (run as root): IPv6 to a
//! virtual service, NAT returns and ICMPv6 errors quoting them reach the AF_XDP socket;
//! neighbour discovery, echo and the director's own traffic stay with the kernel; the SYN
//! filter holds back an IPv6 client's first SYN until it is retransmitted.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use xvs_dataplane::afxdp::{AfXdpPorts, XskConfig};
use xvs_dataplane::netdev::NetDev;
use xvs_dataplane::packet_io::PacketIo;
use xvs_dataplane::xdp::{AttachMode, Match6, MatchKey6, XdpFilter, proto};
use xvs_forwarders::{L4, parse6_bytes};

const DIRECTOR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2);
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0x100);
const FRAMES: usize = 10;

fn udp_socket(addr: SocketAddrV6) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

/// An ICMPv6 port unreachable (checksum left to the kernel) quoting a UDP datagram
/// `[src]:sport -> [dst]:dport`.
fn port_unreachable_quoting(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    icmp.extend_from_slice(&src.octets());
    icmp.extend_from_slice(&dst.octets());
    icmp.extend_from_slice(&sport.to_be_bytes());
    icmp.extend_from_slice(&dport.to_be_bytes());
    icmp.extend_from_slice(&[0, 8, 0, 0]);
    icmp
}

/// Sends an ICMPv6 message from the calling thread's namespace (the kernel adds the IPv6
/// header and the checksum).
fn send_icmp6(to: Ipv6Addr, message: &[u8]) {
    // SAFETY: plain socket(2), checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
    assert!(
        fd >= 0,
        "raw ICMPv6 socket: {}",
        std::io::Error::last_os_error()
    );
    let addr = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: to.octets(),
        },
        sin6_scope_id: 0,
    };
    // SAFETY: `message` and `addr` are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd,
            message.as_ptr().cast(),
            message.len(),
            0,
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    assert_eq!(
        sent,
        message.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}

/// A director namespace and a client namespace on one veth, IPv6 addresses on both ends
/// and the VIP on the director's.
fn one_arm6(lab: &mut Lab) -> (String, String, Link) {
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth("e", &dir, "10.76.0.1/24", &cli, "10.76.0.2/24");
    for (ns, dev, cidr) in [
        (&dir, &link.left, "2001:db8:77::1/64"),
        (&dir, &link.left, "2001:db8:77::100/128"),
        (&cli, &link.right, "2001:db8:77::2/64"),
    ] {
        run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev, "nodad"]);
    }
    (dir, cli, link)
}

#[test]
fn the_filter_sends_ipv6_vip_traffic_to_the_socket_and_leaves_neighbour_discovery_to_the_kernel() {
    let mut lab = Lab::new();
    let (dir, cli, link) = one_arm6(&mut lab);
    let dev = link.left.clone();
    let (vip_port_socket, other_port_socket) = in_netns(&dir, || {
        (
            udp_socket(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 5000, 0, 0)),
            udp_socket(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 5001, 0, 0)),
        )
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        let udp = |addr, port| Match6 {
            addr,
            port,
            proto: proto::UDP,
        };
        // A reload that keeps one entry and drops one leaves exactly the one.
        filter.set_vips6(&[udp(VIP, 5000), udp(VIP, 5002)]).unwrap();
        filter.set_vips6(&[udp(VIP, 5000)]).unwrap();
        assert_eq!(
            filter.vips6().unwrap(),
            vec![MatchKey6::from(udp(VIP, 5000))]
        );
        // The client plays a NAT real server answering from port 9000.
        filter.set_nat_returns6(&[udp(CLIENT, 9000)]).unwrap();
        ready_tx.send(netdev.ipv6.clone()).unwrap();
        let mut received: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.len() < FRAMES + 2 && Instant::now() < deadline {
            ports
                .poll(64, &mut |_, frames, _| {
                    received.extend(frames.iter().map(|f| f.data().to_vec()));
                })
                .unwrap();
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        let _ = stop_rx.recv_timeout(Duration::from_secs(15));
        // The locals map takes the director's IPv6 addresses (the runtime fills it).
        filter.set_locals6(&[DIRECTOR]).unwrap();
        drop(ports);
        drop(filter);
        received
    });
    let own = match ready_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(own) => own,
        Err(_) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => panic!("director thread ended before it was ready"),
        },
    };
    assert!(
        own.contains(&(VIP, 128)) && own.contains(&(DIRECTOR, 64)),
        "{own:?}"
    );
    assert!(has_xdp(&dir, &link.left), "the filter is attached");
    // Neighbour discovery and echo pass: ping6 resolves the director and the VIP and gets
    // the kernel's answers while the filter is attached.
    for target in ["2001:db8:77::1", "2001:db8:77::100"] {
        assert!(
            succeeds(
                "ip",
                &[
                    "netns", "exec", &cli, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", target
                ]
            ),
            "ping {target} while the filter is attached"
        );
    }
    in_netns(&cli, move || {
        let socket = udp_socket(SocketAddrV6::new(CLIENT, 0, 0, 0));
        for i in 0..FRAMES {
            socket
                .send_to(format!("to-vip-{i}").as_bytes(), (VIP, 5000))
                .unwrap();
        }
        socket.send_to(b"vip-other-port", (VIP, 5001)).unwrap();
        socket
            .send_to(b"director-address", (DIRECTOR, 5001))
            .unwrap();
        let real_server = udp_socket(SocketAddrV6::new(CLIENT, 9000, 0, 0));
        real_server
            .send_to(b"nat-return", (DIRECTOR, 5555))
            .unwrap();
        send_icmp6(VIP, &port_unreachable_quoting(VIP, 5000, CLIENT, 40000));
    });
    let mut kernel_got = Vec::new();
    let mut buf = [0u8; 128];
    for _ in 0..2 {
        let (n, _) = other_port_socket
            .recv_from(&mut buf)
            .expect("other port reaches the kernel");
        kernel_got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    kernel_got.sort();
    assert_eq!(kernel_got, ["director-address", "vip-other-port"]);
    stop_tx.send(()).unwrap();
    let received = worker.join().unwrap();
    // ND packets may reach the socket only if the filter took them: it must not.
    assert_eq!(
        received.len(),
        FRAMES + 2,
        "VIP datagrams, the NAT return and the ICMPv6 error, nothing else"
    );
    for (i, frame) in received[..FRAMES].iter().enumerate() {
        let view = parse6_bytes(frame).expect("an IPv6 UDP frame");
        assert_eq!((view.src, view.dst), (CLIENT, VIP));
        assert!(matches!(view.l4, L4::Udp { dst_port: 5000, .. }));
        let start = usize::from(view.l4_offset) + 8;
        assert_eq!(
            &frame[start..view.ip_end()],
            format!("to-vip-{i}").as_bytes()
        );
    }
    let nat = parse6_bytes(&received[FRAMES]).expect("NAT return");
    assert_eq!((nat.src, nat.dst), (CLIENT, DIRECTOR));
    assert!(matches!(nat.l4, L4::Udp { src_port: 9000, .. }));
    let icmp = parse6_bytes(&received[FRAMES + 1]).expect("ICMPv6 error");
    assert!(icmp.is_icmp_error() && icmp.dst == VIP);
    vip_port_socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        vip_port_socket.recv_from(&mut buf).is_err(),
        "the kernel never saw VIP datagrams"
    );
    let _ = cli;
}

/// An ICMPv6 Packet Too Big (checksum left to the kernel) quoting an IPv6-in-IPv6 packet
/// `tunnel_source -> real_server` that carries a TCP packet `[CLIENT]:40000 -> [VIP]:80`.
fn too_big_quoting_a_tunnel(tunnel_source: Ipv6Addr, real_server: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&1400u32.to_be_bytes());
    icmp.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0x8c, 41, 63]);
    icmp.extend_from_slice(&tunnel_source.octets());
    icmp.extend_from_slice(&real_server.octets());
    icmp.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0x64, 6, 63]);
    icmp.extend_from_slice(&CLIENT.octets());
    icmp.extend_from_slice(&VIP.octets());
    icmp.extend_from_slice(&40000u16.to_be_bytes());
    icmp.extend_from_slice(&80u16.to_be_bytes());
    icmp.extend_from_slice(&[0, 0, 0, 1]);
    icmp
}

#[test]
fn icmpv6_errors_about_the_directors_own_tunnel_packets_reach_the_socket() {
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth("e", &dir, "10.76.1.1/24", &cli, "10.76.1.2/24");
    for (ns, dev, cidr) in [
        (&dir, &link.left, "2001:db8:77::1/64"),
        (&cli, &link.right, "2001:db8:77::2/64"),
    ] {
        run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev, "nodad"]);
    }
    let dev = link.left.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let worker = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        filter.set_locals6(&[DIRECTOR]).unwrap();
        ready_tx.send(()).unwrap();
        let mut received: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.is_empty() && Instant::now() < deadline {
            ports
                .poll(64, &mut |_, frames, _| {
                    received.extend(frames.iter().map(|f| f.data().to_vec()));
                })
                .unwrap();
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        drop(ports);
        drop(filter);
        received
    });
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => panic!("director thread ended before it was ready"),
        }
    }
    // The client plays a router before a TUN real server. It first reports a tunnel packet
    // from an address that is not the director's (the kernel's), then one of ours: the
    // socket receives only the second, so the first was left to the kernel.
    let stranger = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0x99);
    in_netns(&cli, move || {
        send_icmp6(DIRECTOR, &too_big_quoting_a_tunnel(stranger, CLIENT));
        send_icmp6(DIRECTOR, &too_big_quoting_a_tunnel(DIRECTOR, CLIENT));
    });
    let received = worker.join().unwrap();
    assert_eq!(received.len(), 1, "only the error about our own tunnel");
    let view = parse6_bytes(&received[0]).expect("an ICMPv6 error");
    assert!(view.is_icmp_error() && (view.src, view.dst) == (CLIENT, DIRECTOR));
    let quoted_source = &received[0][usize::from(view.l4_offset) + 8 + 8..][..16];
    assert_eq!(quoted_source, DIRECTOR.octets());
    let _ = cli;
}

/// The SYN filter in force over IPv6: a real kernel client's first SYN to an IPv6 VIP is
/// held back, its retransmission proves its address and passes, and so do the later ones.
#[test]
fn the_syn_filter_lets_an_ipv6_client_in_after_its_retransmission() {
    let mut lab = Lab::new();
    let (dir, cli, link) = one_arm6(&mut lab);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let tcp = Match6 {
        addr: VIP,
        port: 5000,
        proto: proto::TCP,
    };
    let worker = syn_filter_director(
        &dir,
        &link.left,
        move |filter| filter.set_vips6(&[tcp]).unwrap(),
        stop_rx,
    );
    let started = in_netns(&cli, || {
        let started = Instant::now();
        let refused = std::net::TcpStream::connect_timeout(
            &SocketAddrV6::new(VIP, 5000, 0, 0).into(),
            Duration::from_millis(2500),
        );
        assert!(refused.is_err(), "nothing answers the client");
        started
    });
    stop_tx.send(()).unwrap();
    let (received, counts) = worker.join().unwrap();
    let syns: Vec<(Instant, u16)> = received
        .iter()
        .filter_map(|(at, frame)| {
            let view = parse6_bytes(frame).ok()?;
            match view.l4 {
                L4::Tcp {
                    src_port, flags, ..
                } if view.src == CLIENT && flags.0 & 0x12 == 0x02 => Some((*at, src_port)),
                _ => None,
            }
        })
        .collect();
    assert!(!syns.is_empty(), "the retransmissions passed: {syns:?}");
    assert!(syns.iter().all(|s| s.1 == syns[0].1), "{syns:?}");
    assert!(
        syns[0].0 - started >= Duration::from_millis(800),
        "the first SYN was held back: the first through came {:?} after it",
        syns[0].0 - started
    );
    let sent = syns.len() as u64 + 1;
    assert_eq!(
        (counts.seen, counts.dropped, counts.proven, counts.passed),
        (sent, 1, 1, sent - 2),
        "{counts:?}"
    );
}
