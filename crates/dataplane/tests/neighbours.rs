//! Neighbour resolution through the kernel's table, on a veth pair between namespaces.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use xvs_dataplane::neigh::NeighbourCache;
use xvs_dataplane::netdev::NetDev;

const PEER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const NOBODY: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 99);

#[test]
fn a_requested_neighbour_is_resolved_by_the_kernel_and_found_in_its_table() {
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let peer = lab.netns("peer");
    let link = lab.veth("n", &dir, "10.79.0.1/24", &peer, "10.79.0.2/24");
    let peer_mac = in_netns(&peer, {
        let dev = link.right.clone();
        move || NetDev::by_name(&dev).unwrap().mac
    });
    let dev = link.left.clone();
    let (found, after, unresolved) = in_netns(&dir, move || {
        let ifindex = NetDev::by_name(&dev).unwrap().ifindex;
        let mut cache = NeighbourCache::open(&[ifindex]).unwrap();
        assert_eq!(
            cache.lookup(0, PEER),
            None,
            "nothing known before resolution"
        );
        assert!(cache.request(0, PEER).unwrap(), "the first request is sent");
        assert!(!cache.request(0, PEER).unwrap(), "repeats are rate-limited");
        assert!(cache.request(0, NOBODY).unwrap());
        assert!(cache.request(1, PEER).is_err(), "no port 1");
        let start = Instant::now();
        let mut found = None;
        while start.elapsed() < Duration::from_secs(5) {
            cache.refresh().unwrap();
            found = cache.lookup(0, PEER);
            if found.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            found,
            cache.neighbours().get(0, PEER),
            cache.lookup(0, NOBODY),
        )
    });
    assert_eq!(
        found,
        Some(peer_mac),
        "the kernel resolved the peer after NTF_USE"
    );
    assert_eq!(after, Some(peer_mac), "the published table has it too");
    assert_eq!(
        unresolved, None,
        "an address nobody answers stays unresolved"
    );
}

#[test]
fn an_ipv6_neighbour_is_resolved_by_the_kernel_through_neighbour_discovery() {
    const PEER6: &str = "2001:db8:79::2";
    let mut lab = Lab::new();
    let dir = lab.netns("dir");
    let peer = lab.netns("peer");
    let link = lab.veth("n", &dir, "10.79.1.1/24", &peer, "10.79.1.2/24");
    // nodad: a tentative address neither sends nor answers solicitations.
    for (ns, dev, cidr) in [
        (&dir, &link.left, "2001:db8:79::1/64"),
        (&peer, &link.right, "2001:db8:79::2/64"),
    ] {
        run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev, "nodad"]);
    }
    let peer_mac = in_netns(&peer, {
        let dev = link.right.clone();
        move || NetDev::by_name(&dev).unwrap().mac
    });
    let dev = link.left.clone();
    let (own, found, published) = in_netns(&dir, move || {
        let netdev = NetDev::by_name(&dev).unwrap();
        let own = netdev.ipv6.clone();
        let peer: std::net::Ipv6Addr = PEER6.parse().unwrap();
        let mut cache = NeighbourCache::open(&[netdev.ifindex]).unwrap();
        assert_eq!(cache.lookup(0, peer), None);
        assert!(cache.request(0, peer).unwrap(), "the first request is sent");
        assert!(!cache.request(0, peer).unwrap(), "repeats are rate-limited");
        let start = Instant::now();
        let mut found = None;
        while start.elapsed() < Duration::from_secs(5) {
            cache.refresh().unwrap();
            found = cache.lookup(0, peer);
            if found.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (own, found, cache.neighbours().get6(0, peer))
    });
    assert!(
        own.contains(&("2001:db8:79::1".parse().unwrap(), 64)),
        "the interface's IPv6 addresses are read: {own:?}"
    );
    assert_eq!(
        found,
        Some(peer_mac),
        "the kernel resolved the peer after NTF_USE"
    );
    assert_eq!(published, Some(peer_mac));
}
