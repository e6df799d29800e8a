//! The generator on real AF_XDP sockets between two namespaces (run as root, as `make test`).
//!
//! A veth pair joins a client and a server namespace. Frames the sender writes must reach a
//! kernel UDP socket on the server, which proves their checksums (the kernel drops bad ones),
//! and a listener on the server must count exactly what was sent. Rates are low and counts
//! small, so nothing depends on the machine's speed.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use xvs_lab::netns::{Namespace, unique_tag, veth};
use xvs_pktgen::frame::Addressing;
use xvs_pktgen::pattern::{FlowSpace, FrameSize, Mode, Pattern};
use xvs_pktgen::wire::{ListenSpec, Listener, SendOptions, Sender, enter_netns};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);

struct Pair {
    client: Namespace,
    server: Namespace,
    server_mac: [u8; 6],
}

fn pair() -> Pair {
    let tag = unique_tag();
    let client = Namespace::create(&format!("xvs-pg-{tag}-c")).unwrap();
    let server = Namespace::create(&format!("xvs-pg-{tag}-s")).unwrap();
    veth("eth0", &client, "eth0", &server).unwrap();
    client.addr("eth0", &format!("{CLIENT}/24")).unwrap();
    server.addr("eth0", &format!("{SERVER}/24")).unwrap();
    let mac = server.mac("eth0").unwrap();
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    Pair {
        client,
        server,
        server_mac: bytes.try_into().unwrap(),
    }
}

/// Sends `packets` UDP packets of `size` to SERVER:`port` from the client namespace, at
/// `rate`, with `listeners` counting; the summary.
fn send_udp(
    pair: &Pair,
    port: u16,
    packets: u64,
    size: FrameSize,
    listeners: Vec<ListenSpec>,
) -> xvs_pktgen::report::Summary {
    let client = pair.client.name().to_string();
    let server_mac = pair.server_mac;
    std::thread::spawn(move || {
        enter_netns(&client).unwrap();
        let dev = xvs_dataplane::netdev::NetDev::by_name("eth0").unwrap();
        let addressing = Addressing {
            src_mac: dev.mac,
            dst_mac: server_mac,
            dst: SERVER,
            dst_port: port,
            ipv6: None,
        };
        let mut pattern =
            Pattern::new(Mode::Udp, 16, FlowSpace::from(CLIENT, 1), size, &addressing);
        let listeners: Vec<Listener> = listeners
            .iter()
            .map(|spec| Listener::start(spec).unwrap())
            .collect();
        let mut sender = Sender::open("eth0").unwrap();
        // Paced by time: on a loaded 2-core machine the sender can be descheduled for part of
        // the run and send fewer than `packets`, so the tests assert on what was sent.
        let rate = 2_000;
        let options = SendOptions {
            rate,
            duration: Duration::from_secs_f64(packets as f64 / rate as f64),
            live: false,
        };
        sender.run(&mut pattern, &options, listeners).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn frames_reach_a_kernel_udp_socket_with_valid_checksums() {
    let pair = pair();
    let server = pair.server.name().to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        enter_netns(&server).unwrap();
        let socket = UdpSocket::bind((SERVER, 9999)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            got.push((n, from));
        }
        got
    });
    ready_rx.recv().unwrap();
    let summary = send_udp(&pair, 9999, 200, FrameSize::Imix, Vec::new());
    let got = receiver.join().unwrap();
    assert!(summary.tx.packets >= 100, "{summary:?}");
    assert_eq!(
        got.len() as u64,
        summary.tx.packets,
        "every datagram arrived"
    );
    assert!(
        got.iter()
            .all(|(_, from)| from.ip() == std::net::IpAddr::V4(CLIENT))
    );
    let ports: std::collections::HashSet<u16> = got.iter().map(|(_, f)| f.port()).collect();
    assert_eq!(ports.len(), 16, "16 flows");
    // IMIX payloads: 64-, 594- and 1518-byte frames carry 18, 548 and 1472 bytes of UDP data.
    let sizes: std::collections::HashSet<usize> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(sizes, [18, 548, 1472].into_iter().collect());
}

#[test]
fn a_listener_counts_and_times_what_was_sent() {
    let pair = pair();
    let spec: ListenSpec = format!("{}:eth0:{SERVER}", pair.server.name())
        .parse()
        .unwrap();
    let summary = send_udp(&pair, 7, 300, FrameSize::Fixed(64), vec![spec.clone()]);
    assert!(summary.tx.packets >= 150, "{summary:?}");
    assert_eq!(summary.rx.packets, summary.tx.packets, "{summary:?}");
    assert_eq!(summary.lost, Some(0));
    assert_eq!(summary.per_interface[&spec.label()], summary.tx.packets);
    let latency = summary
        .latency
        .expect("64-byte UDP frames carry send times");
    assert_eq!(latency.samples, summary.tx.packets);
    assert!(latency.p50_us > 0.0 && latency.p50_us <= latency.max_us);
}
