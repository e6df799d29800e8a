//! The XDP filter and AF_XDP ports on veth pairs between namespaces (run as root).
//!
//! The director side runs on a thread that entered the director's namespace (`setns`), so the
//! filter, the sockets and the netlink queries all see that namespace.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use xvs_dataplane::afxdp::{AfXdpPorts, CopyMode, XskConfig};
use xvs_dataplane::netdev::NetDev;
use xvs_dataplane::packet_io::{PacketIo, PortStats, Verdict};
use xvs_dataplane::xdp::{AttachMode, MARK_RANGES, MarkEntry, Match, MatchKey, XdpFilter, XdpMode};

const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const FRAMES: usize = 20;

/// A director namespace and a client namespace on one veth, the VIP on the director's end.
fn one_arm(lab: &mut Lab) -> Link {
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth("e", &dir, "10.77.0.1/24", &cli, "10.77.0.2/24");
    run(
        "ip",
        &[
            "-n",
            &dir,
            "addr",
            "add",
            "10.77.0.100/32",
            "dev",
            &link.left,
        ],
    );
    link
}

fn udp_socket(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

/// Waits for the director thread's setup, resuming its panic if it failed.
fn ready<T, R>(
    rx: &mpsc::Receiver<T>,
    worker: std::thread::JoinHandle<R>,
) -> (T, std::thread::JoinHandle<R>) {
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(value) => (value, worker),
        Err(_) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => panic!("director thread ended before it was ready"),
        },
    }
}

#[test]
fn the_filter_sends_vip_traffic_to_the_socket_and_everything_else_to_the_kernel() {
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let (dir, cli, dev) = (
        link.left_ns.clone(),
        link.right_ns.clone(),
        link.left.clone(),
    );
    let (vip_port_socket, other_port_socket) = in_netns(&dir, || {
        (udp_socket("0.0.0.0:5000"), udp_socket("0.0.0.0:5001"))
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
        // A reload that keeps two entries and drops one leaves exactly the two.
        let first = [
            Match::udp(VIP, 5000),
            Match::udp(VIP, 5002),
            Match::tcp(VIP, 5000),
        ];
        filter.set_vips(&first).unwrap();
        filter
            .set_vips(&[Match::udp(VIP, 5000), Match::tcp(VIP, 5000)])
            .unwrap();
        let mut vips = filter.vips().unwrap();
        vips.sort_by_key(|k| k.to_bytes());
        let mut wanted = [Match::udp(VIP, 5000), Match::tcp(VIP, 5000)].map(MatchKey::from);
        wanted.sort_by_key(|k| k.to_bytes());
        assert_eq!(vips, wanted);
        // The client plays a NAT real server answering from port 9000.
        filter.set_nat_returns(&[Match::udp(CLIENT, 9000)]).unwrap();
        assert_eq!(filter.nat_returns().unwrap().len(), 1);
        ready_tx
            .send((filter.mode(), ports.mode(0).unwrap()))
            .unwrap();

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
        let stats = ports.stats(0);
        drop(ports);
        drop(filter);
        (received, stats)
    });
    let ((xdp_mode, copy_mode), worker) = ready(&ready_rx, worker);
    assert!(has_xdp(&dir, &link.left), "the filter is attached");

    in_netns(&cli, move || {
        let socket = udp_socket("10.77.0.2:0");
        for i in 0..FRAMES {
            socket
                .send_to(format!("to-vip-{i}").as_bytes(), (VIP, 5000))
                .unwrap();
        }
        socket.send_to(b"vip-other-port", (VIP, 5001)).unwrap();
        socket
            .send_to(b"director-address", (DIRECTOR, 5001))
            .unwrap();
        let real_server = udp_socket("10.77.0.2:9000");
        real_server
            .send_to(b"nat-return", (DIRECTOR, 5555))
            .unwrap();
        send_icmp(VIP, &port_unreachable_quoting(VIP, 5000, CLIENT, 40000));
    });
    // ARP and ICMP go to the kernel: the director's address and the VIP answer pings.
    for target in ["10.77.0.1", "10.77.0.100"] {
        assert!(
            succeeds(
                "ip",
                &[
                    "netns", "exec", &cli, "ping", "-c", "2", "-i", "0.2", "-W", "2", target
                ]
            ),
            "ping {target} while the filter is attached"
        );
    }
    let mut kernel_got = Vec::new();
    let mut buf = [0u8; 128];
    for _ in 0..2 {
        let (n, from) = other_port_socket
            .recv_from(&mut buf)
            .expect("other port reaches the kernel");
        assert_eq!(from.ip(), std::net::IpAddr::V4(CLIENT));
        kernel_got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    kernel_got.sort();
    assert_eq!(kernel_got, ["director-address", "vip-other-port"]);

    stop_tx.send(()).unwrap();
    let (received, stats): (Vec<Vec<u8>>, PortStats) = worker.join().unwrap();
    assert_eq!(
        received.len(),
        FRAMES + 2,
        "VIP datagrams, the NAT return and the ICMP error reached the AF_XDP socket"
    );
    for (i, frame) in received[..FRAMES].iter().enumerate() {
        let (src, dst, _, dport, payload) = udp_fields(frame).expect("a UDP frame");
        assert_eq!((src, dst, dport), (CLIENT, VIP, 5000));
        assert_eq!(
            payload,
            format!("to-vip-{i}").as_bytes(),
            "intact bytes, in order"
        );
        assert!(
            checksums_ok(frame),
            "complete checksums from the client (tx offload off)"
        );
    }
    let (src, dst, sport, _, payload) = udp_fields(&received[FRAMES]).expect("NAT return");
    assert_eq!(
        (src, dst, sport, payload),
        (CLIENT, DIRECTOR, 9000, &b"nat-return"[..])
    );
    let icmp = &received[FRAMES + 1];
    assert_eq!(
        (icmp[IP + 9], icmp[IP + 20]),
        (1, 3),
        "the unreachable quoting VIP:5000"
    );
    assert_eq!(stats.rx_packets, FRAMES as u64 + 2);
    assert_eq!(stats.invalid_descs, 0);
    assert_eq!(
        stats.wakeups, 0,
        "receiving alone needs no system call (need_wakeup)"
    );
    vip_port_socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        vip_port_socket.recv_from(&mut buf).is_err(),
        "the kernel never saw VIP datagrams"
    );
    assert!(
        !has_xdp(&dir, &link.left),
        "dropping the filter detached it"
    );
    // veth refuses zero-copy here; the native mode is offered.
    assert_eq!(copy_mode, CopyMode::Copy);
    assert_eq!(xdp_mode, XdpMode::Drv);
}

#[test]
fn a_received_frame_rewritten_and_sent_back_reaches_the_client_socket() {
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let (dir, cli, dev) = (
        link.left_ns.clone(),
        link.right_ns.clone(),
        link.left.clone(),
    );

    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        filter.set_vips(&[Match::udp(VIP, 6000)]).unwrap();
        ready_tx.send(()).unwrap();
        let mut bad_checksums = 0;
        let mut echoed = 0;
        loop {
            ports
                .poll(64, &mut |_, frames, verdicts| {
                    for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                        let data = frame.data_mut();
                        if !checksums_ok(data) {
                            bad_checksums += 1;
                        }
                        swap(data, 0, 6, 6); // MACs
                        swap(data, IP + 12, IP + 16, 4); // addresses
                        swap(data, UDP, UDP + 2, 2); // ports
                        *verdict = Verdict::Transmit { port: 0 };
                        echoed += 1;
                    }
                })
                .unwrap();
            if stop_rx.try_recv().is_ok() {
                break;
            }
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        // `wait` took the last completions back.
        ports.wait(Duration::from_millis(5)).unwrap();
        (bad_checksums, echoed, ports.stats(0), ports.frames())
    });
    let ((), worker) = ready(&ready_rx, worker);

    let replies = in_netns(&cli, move || {
        let socket = udp_socket("10.77.0.2:0");
        let mut replies = Vec::new();
        let mut buf = [0u8; 128];
        for i in 0..FRAMES {
            let message = format!("echo-{i}");
            socket.send_to(message.as_bytes(), (VIP, 6000)).unwrap();
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => replies.push((from, buf[..n].to_vec(), message)),
                Err(e) => panic!("no echo for {message}: {e}"),
            }
        }
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        (replies, udp_in_csum_errors(&snmp))
    });
    stop_tx.send(()).unwrap();
    let (bad_checksums, echoed, stats, frames) = worker.join().unwrap();
    let (replies, csum_errors) = replies;
    // Every frame is accounted for after the traffic: the fill ring full again (2048 of the
    // 4096), the echoes completed, nothing held.
    let config = XskConfig::default();
    assert!(frames.balanced(), "{frames:?}");
    assert_eq!(frames.total, config.umem.frame_count, "{frames:?}");
    assert_eq!(frames.in_flight, 0, "{frames:?}");
    assert_eq!(
        (frames.kernel, frames.free),
        (config.fill_ring, config.umem.frame_count - config.fill_ring),
        "{frames:?}"
    );
    assert_eq!(replies.len(), FRAMES);
    for (from, bytes, sent) in replies {
        assert_eq!(from, SocketAddrV4::new(VIP, 6000).into());
        assert_eq!(bytes, sent.as_bytes());
    }
    assert_eq!(
        csum_errors, 0,
        "the client's kernel accepted every checksum"
    );
    assert_eq!((bad_checksums, echoed), (0, FRAMES));
    assert_eq!(stats.tx_packets, FRAMES as u64);
    assert_eq!(stats.tx_ring_full + stats.bad_verdict, 0);
    // One TX kick per batch that queued frames (each echo here is its own batch), no more.
    assert!(stats.wakeups <= FRAMES as u64, "{} wakeups", stats.wakeups);
}

#[test]
fn a_two_arm_director_forwards_from_one_interface_to_the_other_through_the_shared_umem() {
    let mut lab = Lab::new();
    let ext = one_arm(&mut lab);
    let srv = lab.netns("srv");
    let int = lab.veth("i", &ext.left_ns, "10.78.0.1/24", &srv, "10.78.0.2/24");
    run(
        "ip",
        &["-n", &srv, "route", "add", "default", "via", "10.78.0.1"],
    );
    let server_socket = in_netns(&srv, || udp_socket("10.78.0.2:7000"));
    let server_mac = in_netns(&srv, {
        let dev = int.right.clone();
        move || NetDev::by_name(&dev).unwrap().mac
    });

    let (dir, cli) = (ext.left_ns.clone(), ext.right_ns.clone());
    let (ext_dev, int_dev) = (ext.left.clone(), int.left.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = spawn_in(&dir, move || {
        let outside = NetDev::by_name(&ext_dev).unwrap();
        let inside = NetDev::by_name(&int_dev).unwrap();
        let mut filter = XdpFilter::attach(outside.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&ext_dev, &int_dev], 0, &XskConfig::default()).unwrap();
        assert_eq!(ports.port_count(), 2);
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        filter.set_vips(&[Match::any(VIP)]).unwrap();
        ready_tx.send(()).unwrap();
        loop {
            ports
                .poll(64, &mut |ingress, frames, verdicts| {
                    for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                        let data = frame.data_mut();
                        if ingress != 0 || udp_fields(data).is_none() {
                            continue; // stays Drop
                        }
                        data[0..6].copy_from_slice(&server_mac);
                        data[6..12].copy_from_slice(&inside.mac);
                        data[IP + 16..IP + 20].copy_from_slice(&SERVER.octets());
                        fix_checksums(data);
                        *verdict = Verdict::Transmit { port: 1 };
                    }
                })
                .unwrap();
            if stop_rx.try_recv().is_ok() {
                break;
            }
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        (ports.stats(0), ports.stats(1))
    });
    let ((), worker) = ready(&ready_rx, worker);

    in_netns(&cli, move || {
        let socket = udp_socket("10.77.0.2:0");
        for i in 0..FRAMES {
            socket
                .send_to(format!("fwd-{i}").as_bytes(), (VIP, 7000))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut buf = [0u8; 128];
    let mut got = Vec::new();
    while got.len() < FRAMES {
        match server_socket.recv_from(&mut buf) {
            Ok((n, from)) => got.push((from, String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(_) => break,
        }
    }
    stop_tx.send(()).unwrap();
    let (outside, inside) = worker.join().unwrap();
    assert_eq!(
        got.len(),
        FRAMES,
        "every datagram crossed to the inside interface: {got:?}"
    );
    for (i, (from, payload)) in got.iter().enumerate() {
        assert_eq!(from.ip(), std::net::IpAddr::V4(CLIENT));
        assert_eq!(payload, &format!("fwd-{i}"));
    }
    assert_eq!(outside.rx_packets, FRAMES as u64);
    assert_eq!(inside.tx_packets, FRAMES as u64);
    assert_eq!(outside.tx_packets, 0);
}

fn swap(data: &mut [u8], a: usize, b: usize, len: usize) {
    for i in 0..len {
        data.swap(a + i, b + i);
    }
}

/// `UdpInCsumErrors` from /proc/net/snmp (the second `Udp:` line holds the values).
fn udp_in_csum_errors(snmp: &str) -> u64 {
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let (names, values) = (udp[0].split_whitespace(), udp[1].split_whitespace());
    names
        .zip(values)
        .find(|(name, _)| *name == "InCsumErrors")
        .and_then(|(_, value)| value.parse().ok())
        .expect("InCsumErrors in /proc/net/snmp")
}

/// An ICMP port unreachable (without the IP header) quoting a UDP datagram `src:sport ->
/// dst:dport`, as a client host answers a reply it has no socket for.
fn port_unreachable_quoting(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut quoted = vec![0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0];
    quoted.extend_from_slice(&src.octets());
    quoted.extend_from_slice(&dst.octets());
    let header_sum = checksum(&quoted, 0);
    quoted[10..12].copy_from_slice(&header_sum.to_be_bytes());
    quoted.extend_from_slice(&sport.to_be_bytes());
    quoted.extend_from_slice(&dport.to_be_bytes());
    quoted.extend_from_slice(&[0, 16, 0, 0]);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let sum = checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// Sends an ICMP message (the kernel adds the IP header) from the calling thread's namespace.
fn send_icmp(to: Ipv4Addr, message: &[u8]) {
    // SAFETY: plain socket(2), checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `message` and `addr` are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd,
            message.as_ptr().cast(),
            message.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
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

/// Copy mode sends at most 32 frames per wake-up: a batch of 64 echoes must still go out
/// whole, and nothing may stay on the TX ring once the traffic stops. The worker starts
/// polling only after the whole burst waits in its RX ring, so its batches are full.
#[test]
fn a_burst_is_transmitted_whole_even_when_traffic_stops() {
    const BURST: usize = 200;
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let (dir, cli, dev) = (
        link.left_ns.clone(),
        link.right_ns.clone(),
        link.left.clone(),
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        let mut ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        filter.set_vips(&[Match::udp(VIP, 6001)]).unwrap();
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        while stop_rx.try_recv().is_err() {
            let summary = ports
                .poll(64, &mut |_, frames, verdicts| {
                    for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                        let data = frame.data_mut();
                        swap(data, 0, 6, 6);
                        swap(data, IP + 12, IP + 16, 4);
                        swap(data, UDP, UDP + 2, 2);
                        *verdict = Verdict::Transmit { port: 0 };
                    }
                })
                .unwrap();
            if summary.received == 0 {
                ports.wait(Duration::from_millis(5)).unwrap();
            }
        }
        ports.stats(0)
    });
    let ((), worker) = ready(&ready_rx, worker);
    let received = in_netns(&cli, move || {
        let socket = udp_socket("10.77.0.2:0");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for i in 0..BURST {
            socket
                .send_to(format!("burst-{i}").as_bytes(), (VIP, 6001))
                .unwrap();
        }
        go_tx.send(()).unwrap();
        let mut buf = [0u8; 128];
        let mut received = 0;
        while received < BURST && socket.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        received
    });
    stop_tx.send(()).unwrap();
    let stats = worker.join().unwrap();
    assert_eq!(stats.tx_ring_full + stats.bad_verdict, 0);
    assert_eq!(
        stats.rx_packets, BURST as u64,
        "the whole burst waited in the RX ring"
    );
    assert_eq!(
        received, BURST,
        "every echo was transmitted, the last ones included"
    );
}

#[test]
fn a_second_filter_on_the_same_interface_is_refused_in_words() {
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let dev = link.left.clone();
    in_netns(&link.left_ns, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let first = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        // As a second xvs on the same interface would: every mode is refused, with why.
        for mode in [AttachMode::Auto, AttachMode::Drv, AttachMode::Skb] {
            let e = XdpFilter::attach(netdev.ifindex, mode)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("the interface already has an XDP program attached: it is in use"),
                "{mode:?}: {e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        drop(first);
        // Once the first is gone the interface is free again.
        XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
    });
}

/// Marked traffic (fwmark services): the mark map's longest matching prefix of (protocol,
/// destination) with the port in one of its ranges goes to the socket; other ports of the
/// same destinations, and a reload's dropped entries, stay the kernel's.
#[test]
fn the_mark_map_sends_marked_ports_of_a_prefix_to_the_socket() {
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let (dir, cli, dev) = (
        link.left_ns.clone(),
        link.right_ns.clone(),
        link.left.clone(),
    );
    // A second address of the /28 on the director, so the client's ARP for it is answered.
    run(
        "ip",
        &[
            "-n",
            &dir,
            "addr",
            "add",
            "10.77.0.97/32",
            "dev",
            &link.left,
        ],
    );
    let kernel = in_netns(&dir, || {
        ["0.0.0.0:5001", "0.0.0.0:6011", "0.0.0.0:7000"].map(udp_socket)
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
        let entry = |addr: Ipv4Addr, prefix_len, ports: &[(u16, u16)]| MarkEntry {
            proto: 17,
            addr: addr.into(),
            prefix_len,
            ports: ports.to_vec(),
        };
        // A first table with UDP 7000 to the VIP, then a reload without it.
        filter
            .set_marks(&[
                entry(Ipv4Addr::new(10, 77, 0, 96), 28, &[(5000, 5000)]),
                entry(VIP, 32, &[(7000, 7000)]),
            ])
            .unwrap();
        filter
            .set_marks(&[
                entry(Ipv4Addr::new(10, 77, 0, 96), 28, &[(5000, 5000)]),
                entry(VIP, 32, &[(5000, 5000), (6000, 6010)]),
            ])
            .unwrap();
        let mut marks = filter.marks().unwrap();
        marks.sort();
        assert_eq!(
            marks,
            [
                (17, Ipv4Addr::new(10, 77, 0, 96).into(), 28),
                (17, VIP.into(), 32)
            ]
        );
        let too_many = vec![(1, 1); MARK_RANGES + 1];
        assert!(filter.set_marks(&[entry(VIP, 32, &too_many)]).is_err());
        ready_tx.send(()).unwrap();
        let mut received: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.len() < 4 && Instant::now() < deadline {
            ports
                .poll(64, &mut |_, frames, _| {
                    received.extend(frames.iter().map(|f| f.data().to_vec()));
                })
                .unwrap();
            ports.wait(Duration::from_millis(5)).unwrap();
        }
        let _ = stop_rx.recv_timeout(Duration::from_secs(15));
        received
    });
    let ((), worker) = ready(&ready_rx, worker);
    in_netns(&cli, move || {
        let socket = udp_socket("10.77.0.2:0");
        for (to, port) in [
            (VIP, 5000),
            (VIP, 6000),
            (VIP, 6010),
            (VIP, 5001),
            (VIP, 6011),
            (VIP, 7000),
            (Ipv4Addr::new(10, 77, 0, 1), 5000),
        ] {
            socket
                .send_to(format!("{to}:{port}").as_bytes(), (to, port))
                .unwrap();
        }
        // The director's own address is outside the /28: its 5000 is the kernel's (no
        // socket: an ICMP port unreachable). 10.77.0.97 is inside; the VIP's /32 holds
        // the /28's 5000 as well.
        socket
            .send_to(b"10.77.0.97:5000", (Ipv4Addr::new(10, 77, 0, 97), 5000))
            .unwrap();
    });
    let mut buf = [0u8; 64];
    let mut kernel_got: Vec<String> = kernel
        .iter()
        .map(|s| {
            let (n, _) = s
                .recv_from(&mut buf)
                .expect("unmarked ports reach the kernel");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .collect();
    kernel_got.sort();
    assert_eq!(
        kernel_got,
        ["10.77.0.100:5001", "10.77.0.100:6011", "10.77.0.100:7000"]
    );
    stop_tx.send(()).unwrap();
    let received = worker.join().unwrap();
    let mut got: Vec<String> = received
        .iter()
        .map(|frame| {
            let (src, dst, _, dport, payload) = udp_fields(frame).expect("a UDP frame");
            assert_eq!(src, CLIENT);
            assert!(checksums_ok(frame));
            assert_eq!(payload, format!("{dst}:{dport}").as_bytes());
            String::from_utf8_lossy(payload).into_owned()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "10.77.0.100:5000",
            "10.77.0.100:6000",
            "10.77.0.100:6010",
            "10.77.0.97:5000"
        ]
    );
}

/// Sends the IPv4 packet `packet` (header included, source as written: spoofed if need be)
/// from the calling thread's namespace.
fn send_raw_ipv4(packet: &[u8], to: Ipv4Addr) {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw IPv4 socket");
    socket
        .send_to(packet, &SocketAddrV4::new(to, 0).into())
        .expect("raw send");
}

/// A TCP segment from `src:sport` to VIP:5000 with sequence number `seq`.
fn tcp_to_vip(src: Ipv4Addr, sport: u16, seq: u32, syn: bool) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(src.octets(), VIP.octets(), 64);
    let builder = if syn {
        builder.tcp(sport, 5000, seq, 64240).syn()
    } else {
        builder.tcp(sport, 5000, seq, 64240).ack(1)
    };
    let mut packet = Vec::new();
    builder.write(&mut packet, &[]).unwrap();
    packet
}

/// The SYN filter in force (`syn_filter::SynFilterMaps::set`): spoofed SYNs never reach the
/// socket, a real kernel client's first SYN is held back and its retransmission, a second
/// later, proves its address and passes, and so do later SYNs from it; segments other than
/// SYNs are never touched. The program's counters say the same.
#[test]
fn the_syn_filter_lets_a_retransmitting_client_in_and_keeps_spoofed_syns_out() {
    let mut lab = Lab::new();
    let link = one_arm(&mut lab);
    let (dir, cli, dev) = (
        link.left_ns.clone(),
        link.right_ns.clone(),
        link.left.clone(),
    );
    let spoofed = Ipv4Addr::new(10, 77, 0, 50);
    let spoofed_ack = Ipv4Addr::new(10, 77, 0, 51);

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = syn_filter_director(
        &dir,
        &dev,
        |filter| filter.set_vips(&[Match::tcp(VIP, 5000)]).unwrap(),
        stop_rx,
    );

    let started = in_netns(&cli, move || {
        // A spoofed SYN and its copy 100 ms later (too soon for a retransmission), and a
        // spoofed ACK.
        let first = tcp_to_vip(spoofed, 1111, 7, true);
        send_raw_ipv4(&first, VIP);
        std::thread::sleep(Duration::from_millis(100));
        send_raw_ipv4(&first, VIP);
        send_raw_ipv4(&tcp_to_vip(spoofed_ack, 2222, 9, false), VIP);
        // A real client: nobody answers, so its kernel sends the SYN at 0, 1 s and 3 s.
        let started = Instant::now();
        let refused = std::net::TcpStream::connect_timeout(
            &SocketAddrV4::new(VIP, 5000).into(),
            Duration::from_millis(3500),
        );
        assert!(refused.is_err(), "nothing answers the client");
        // Proven: another SYN from its address passes at once.
        send_raw_ipv4(&tcp_to_vip(CLIENT, 3333, 11, true), VIP);
        started
    });
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let (received, counts) = worker.join().unwrap();

    let tcp: Vec<(Instant, Ipv4Addr, u16, u32, u8)> = received
        .iter()
        .filter_map(|(at, frame)| {
            let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
            let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
                return None;
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else {
                return None;
            };
            let flags = (u8::from(tcp.syn()) << 1) | (u8::from(tcp.ack()) << 4);
            Some((
                *at,
                ip.header().source_addr(),
                tcp.source_port(),
                tcp.sequence_number(),
                flags,
            ))
        })
        .collect();
    assert!(
        tcp.iter().all(|t| t.1 != spoofed),
        "no spoofed SYN reached the socket: {tcp:?}"
    );
    let acks: Vec<_> = tcp.iter().filter(|t| t.1 == spoofed_ack).collect();
    assert_eq!(acks.len(), 1, "the ACK passed untouched: {tcp:?}");
    let client: Vec<&(Instant, Ipv4Addr, u16, u32, u8)> =
        tcp.iter().filter(|t| t.1 == CLIENT).collect();
    type Seen<'a> = Vec<&'a (Instant, Ipv4Addr, u16, u32, u8)>;
    let (after, kernel_syns): (Seen, Seen) = client.into_iter().partition(|t| t.2 == 3333);
    // Linux retransmits a SYN after 1 s, then (tcp_syn_linear_timeouts) every second.
    assert!(
        kernel_syns.len() >= 2,
        "the client's retransmissions passed: {tcp:?}"
    );
    assert!(
        kernel_syns
            .iter()
            .all(|t| (t.2, t.3) == (kernel_syns[0].2, kernel_syns[0].3)),
        "one connection's SYN: {tcp:?}"
    );
    assert!(
        kernel_syns[0].0 - started >= Duration::from_millis(800),
        "the first SYN was held back; the first that passed came {:?} after it",
        kernel_syns[0].0 - started
    );
    assert_eq!(after.len(), 1, "the SYN after the proof passed: {tcp:?}");
    assert_eq!(after[0].3, 11);
    let sent = kernel_syns.len() as u64 + 1;
    assert_eq!(
        (counts.seen, counts.dropped, counts.proven, counts.passed),
        (2 + sent + 1, 3, 1, sent - 1),
        "two spoofed SYNs and the client's first dropped, its first retransmission proving it, \
         the later ones and the raw SYN passed: {counts:?}"
    );
}
