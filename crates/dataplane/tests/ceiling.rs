//! The I/O ceiling (`xvs run --io-ceiling`): frames leave toward the real servers' next hops,
//! in turn, with only the Ethernet header rewritten.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use xvs_dataplane::ceiling::IoCeiling;
use xvs_dataplane::pipeline::counters::{Drop, WorkerCounters};
use xvs_dataplane::pipeline::{ResolveQueue, Shared, Verdict};
use xvs_dataplane::route::{Link, Neighbours, Routes};
use xvs_dataplane::service::snapshot::SnapshotBuilder;
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::SyncPort;
use xvs_forwarders::Frame;

const EXTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 1];
const INTERNAL_MAC: [u8; 6] = [2, 0xd, 0, 0, 0, 2];
const RS_MACS: [[u8; 6]; 2] = [[2, 5, 0, 0, 0, 11], [2, 5, 0, 0, 0, 12]];
const VIP: [u8; 4] = [192, 168, 0, 100];

fn routes() -> Routes {
    let link = |port, name: &str, mac, net, gateway| Link {
        port,
        name: name.into(),
        mac,
        mtu: 1500,
        nets: vec![(net, 24)],
        gateway,
        nets6: Vec::new(),
        gateway6: None,
    };
    Routes {
        links: vec![
            link(
                0,
                "ext",
                EXTERNAL_MAC,
                Ipv4Addr::new(192, 168, 0, 1),
                Some(Ipv4Addr::new(192, 168, 0, 254)),
            ),
            link(1, "int", INTERNAL_MAC, Ipv4Addr::new(10, 0, 0, 1), None),
        ],
    }
}

fn rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 11 + i as u8)
}

/// A NAT service VIP:80/udp with two real servers; `resolved` of them in the neighbours.
fn shared(resolved: usize) -> (Shared, Arc<WorkerCounters>, Arc<ResolveQueue>) {
    let service = ServiceAddr::Inet {
        protocol: Protocol::Udp,
        addr: IpAddr::V4(VIP.into()),
        port: 80,
    };
    let mut table = ServiceTableSpec::default();
    table.add_service(ServiceSpec::new(service)).unwrap();
    for i in 0..2 {
        let dest = DestSpec {
            addr: IpAddr::V4(rip(i)),
            port: 80,
            method: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        table.add_dest(&service, dest).unwrap();
    }
    let mut neighbours = Neighbours::new();
    for (i, mac) in RS_MACS.iter().enumerate().take(resolved) {
        neighbours.insert(1, rip(i), *mac);
    }
    let counters = Arc::new(WorkerCounters::default());
    let resolve = Arc::new(ResolveQueue::new(16));
    let shared = Shared {
        snapshot: Arc::new(SnapshotBuilder::new().build(&table).unwrap()),
        routes: Arc::new(routes()),
        neighbours: Arc::new(neighbours),
        counters: counters.clone(),
        resolve: resolve.clone(),
        tunnel_source: None,
        tunnel_source6: None,
        sync: Arc::new(SyncPort::default()),
        local: Default::default(),
    };
    (shared, counters, resolve)
}

fn udp_frame(sport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0xc, 0, 0, 0, 1], EXTERNAL_MAC)
        .ipv4([192, 168, 0, 50], VIP, 64)
        .udp(sport, 80)
        .write(&mut out, &[7u8; 18])
        .unwrap();
    out
}

/// Runs `frames` through the ceiling as one batch; the verdicts and the frames after.
fn run(ceiling: &mut IoCeiling, frames: &[Vec<u8>]) -> (Vec<Verdict>, Vec<Vec<u8>>) {
    let mut bufs: Vec<Vec<u8>> = frames.to_vec();
    let mut batch: Vec<Frame<'_>> = bufs.iter_mut().map(|b| Frame::whole(b)).collect();
    let mut verdicts = vec![Verdict::Drop; frames.len()];
    ceiling.process_batch(&mut batch, &mut verdicts);
    drop(batch);
    (verdicts, bufs)
}

#[test]
fn frames_go_to_the_real_servers_in_turn_with_only_the_ethernet_header_changed() {
    let (shared, _, _) = shared(2);
    let mut ceiling = IoCeiling::new(shared);
    let frames: Vec<Vec<u8>> = (0..4).map(|i| udp_frame(1000 + i)).collect();
    let (verdicts, out) = run(&mut ceiling, &frames);
    for (i, (verdict, after)) in verdicts.iter().zip(&out).enumerate() {
        assert_eq!(*verdict, Verdict::Transmit { port: 1 });
        assert_eq!(after[..6], RS_MACS[i % 2], "frame {i}: destination MAC");
        assert_eq!(after[6..12], INTERNAL_MAC, "frame {i}: source MAC");
        assert_eq!(
            after[12..],
            frames[i][12..],
            "frame {i}: the IP packet is untouched"
        );
        let parsed = SlicedPacket::from_ethernet(after).unwrap();
        let Some(TransportSlice::Udp(udp)) = parsed.transport else {
            panic!("frame {i} is no longer UDP");
        };
        assert_eq!(udp.source_port(), 1000 + i as u16);
    }
}

#[test]
fn unresolved_real_servers_are_asked_for_and_left_out() {
    let (shared, counters, resolve) = shared(1);
    let mut ceiling = IoCeiling::new(shared.clone());
    assert_eq!(resolve.pop(), Some((1, rip(1).into())));
    let (verdicts, out) = run(&mut ceiling, &[udp_frame(1), udp_frame(2)]);
    assert_eq!(verdicts, vec![Verdict::Transmit { port: 1 }; 2]);
    assert!(out.iter().all(|f| f[..6] == RS_MACS[0]));

    // Nothing resolved: every frame is dropped and counted, and never sent.
    let (shared, counters_none, _) = self::shared(0);
    let mut ceiling = IoCeiling::new(shared);
    let (verdicts, _) = run(&mut ceiling, &[udp_frame(1), udp_frame(2)]);
    assert_eq!(verdicts, vec![Verdict::Drop; 2]);
    assert_eq!(counters_none.drops_of(Drop::NeighbourUnresolved), 2);
    assert_eq!(counters.drops_of(Drop::NeighbourUnresolved), 0);

    // Neighbours published later are picked up.
    let mut neighbours = Neighbours::new();
    neighbours.insert(1, rip(0), RS_MACS[0]);
    neighbours.insert(1, rip(1), RS_MACS[1]);
    ceiling.set_neighbours(Arc::new(neighbours));
    let (verdicts, out) = run(&mut ceiling, &[udp_frame(1), udp_frame(2)]);
    assert_eq!(verdicts, vec![Verdict::Transmit { port: 1 }; 2]);
    assert_eq!(out[0][..6], RS_MACS[0]);
    assert_eq!(out[1][..6], RS_MACS[1]);
}

#[test]
fn a_runt_frame_is_dropped() {
    let (shared, counters, _) = shared(2);
    let mut ceiling = IoCeiling::new(shared);
    let (verdicts, _) = run(&mut ceiling, &[vec![0u8; 8]]);
    assert_eq!(verdicts, vec![Verdict::Drop]);
    assert_eq!(counters.drops_of(Drop::Refused), 1);
}
