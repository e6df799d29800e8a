//! Interface facts, one socket per queue, and a VIP routed to the director (run as root).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use xvs_dataplane::afxdp::{AfXdpPorts, XskConfig};
use xvs_dataplane::netdev::NetDev;
use xvs_dataplane::packet_io::PacketIo;
use xvs_dataplane::xdp::{AttachMode, Match, XdpFilter};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Receives on `ports` until `want` frames came, `stop` says so, or 10 s pass; returns the
/// UDP payloads seen.
fn collect(mut ports: AfXdpPorts, stop: mpsc::Receiver<()>) -> Vec<String> {
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && stop.try_recv().is_err() {
        ports
            .poll(64, &mut |_, frames, _| {
                for frame in frames.iter() {
                    if let Some((_, _, _, _, payload)) = udp_fields(frame.data()) {
                        payloads.push(String::from_utf8_lossy(payload).into_owned());
                    }
                }
            })
            .unwrap();
        ports.wait(Duration::from_millis(5)).unwrap();
    }
    payloads
}

#[test]
fn netdev_reports_what_ip_shows() {
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth_with_queues("f", &dir, "10.77.0.1/24", &cli, "10.77.0.2/24", 3);
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
    run(
        "ip",
        &["-n", &dir, "link", "set", "dev", &link.left, "mtu", "1400"],
    );
    let dev = link.left.clone();
    let facts = in_netns(&dir, move || NetDev::by_name(&dev).unwrap());
    let shown = run("ip", &["-n", &dir, "-o", "link", "show", "dev", &link.left]);
    assert!(
        shown.starts_with(&format!("{}: {}@", facts.ifindex, link.left)),
        "{shown}"
    );
    let mac = facts.mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        shown.contains(&format!("link/ether {mac}")),
        "{shown} vs {mac}"
    );
    assert_eq!(facts.mtu, 1400);
    assert_eq!(facts.rx_queues, 3);
    assert_eq!(
        facts.ipv4,
        vec![
            (Ipv4Addr::new(10, 77, 0, 1), 24),
            (Ipv4Addr::new(10, 77, 0, 100), 32)
        ]
    );
}

#[test]
fn each_queue_has_its_socket_and_the_filter_sends_each_frame_to_its_queues_socket() {
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth_with_queues("q", &dir, "10.77.0.1/24", &cli, "10.77.0.2/24", 2);
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
    let vip = Ipv4Addr::new(10, 77, 0, 100);

    let dev = link.left.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let director = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        assert_eq!(netdev.rx_queues, 2);
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Auto).unwrap();
        filter.set_vips(&[Match::udp(vip, 5000)]).unwrap();
        let mut workers = Vec::new();
        let mut stops = Vec::new();
        for queue in 0..netdev.rx_queues {
            let ports = AfXdpPorts::open(&[&dev], queue, &XskConfig::default()).unwrap();
            filter
                .register_socket(queue, ports.socket_fd(0).unwrap())
                .unwrap();
            let (tx, rx) = mpsc::channel();
            stops.push(tx);
            workers.push(std::thread::spawn(move || collect(ports, rx)));
        }
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv_timeout(Duration::from_secs(15));
        for stop in stops {
            let _ = stop.send(());
        }
        let per_queue: Vec<Vec<String>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        drop(filter);
        per_queue
    });
    match ready_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(()) => {}
        Err(_) => std::panic::resume_unwind(director.join().unwrap_err()),
    }
    let flows = 64;
    in_netns(&cli, move || {
        for i in 0..flows {
            let socket = UdpSocket::bind((CLIENT, 0)).unwrap();
            socket
                .send_to(format!("flow-{i}").as_bytes(), (vip, 5000))
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let per_queue = director.join().unwrap();
    let mut all: Vec<String> = per_queue.concat();
    all.sort();
    let mut expected: Vec<String> = (0..flows).map(|i| format!("flow-{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every flow arrived exactly once");
    let counts: Vec<usize> = per_queue.iter().map(Vec::len).collect();
    assert!(
        counts.iter().all(|&c| c > 0),
        "both queues' sockets received: {counts:?}"
    );
}

#[test]
fn a_vip_routed_to_the_director_without_being_on_its_interface_reaches_the_socket() {
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let cli = lab.netns("cli");
    let link = lab.veth("r", &dir, "10.77.0.1/24", &cli, "10.77.0.2/24");
    // The client's "router" sends the VIP to the director; the director does not own it.
    run(
        "ip",
        &[
            "-n",
            &cli,
            "route",
            "add",
            "10.77.9.100/32",
            "via",
            "10.77.0.1",
        ],
    );
    let vip = Ipv4Addr::new(10, 77, 9, 100);

    let dev = link.left.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let director = spawn_in(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        assert!(netdev.ipv4.iter().all(|&(addr, _)| addr != vip));
        let mut filter = XdpFilter::attach(netdev.ifindex, AttachMode::Skb).unwrap();
        let ports = AfXdpPorts::open(&[&dev], 0, &XskConfig::default()).unwrap();
        filter
            .register_socket(0, ports.socket_fd(0).unwrap())
            .unwrap();
        filter.set_vips(&[Match::udp(vip, 53)]).unwrap();
        ready_tx.send(filter.mode()).unwrap();
        collect(ports, stop_rx)
    });
    let mode = match ready_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(mode) => mode,
        Err(_) => std::panic::resume_unwind(director.join().unwrap_err()),
    };
    assert_eq!(mode.to_string(), "skb", "generic XDP works too");
    in_netns(&cli, move || {
        let socket = UdpSocket::bind((CLIENT, 0)).unwrap();
        for i in 0..5 {
            socket
                .send_to(format!("routed-{i}").as_bytes(), (vip, 53))
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let payloads = director.join().unwrap();
    assert_eq!(
        payloads,
        (0..5).map(|i| format!("routed-{i}")).collect::<Vec<_>>()
    );
}
