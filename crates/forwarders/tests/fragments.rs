//! The fragment policy: every fragment is refused at parse, first and later ones counted
//! apart, so none can reach a rewrite and be sent to a real server chosen without its ports.

mod common;

use std::net::Ipv4Addr;

use common::*;
use etherparse::{IpFragOffset, IpHeaders, PacketBuilder};
use xvs_forwarders::fragments::{FragmentKey, Fragmentation};
use xvs_forwarders::{Reason, parse_bytes};

/// A fragment of a UDP datagram client:5000 -> VIP:53 with identification 0x4242.
fn fragment(more_fragments: bool, offset_units: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ip::new(CLIENT, VIP);
    ip.ident = 0x4242;
    ip.dont_fragment = false;
    let mut header = ip.header();
    header.more_fragments = more_fragments;
    header.fragment_offset = IpFragOffset::try_new(offset_units).unwrap();
    header.protocol = etherparse::IpNumber::UDP;
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_IN_MAC)
        .ip(IpHeaders::Ipv4(header, Default::default()));
    let mut out = Vec::new();
    builder
        .write(&mut out, etherparse::IpNumber::UDP, payload)
        .unwrap();
    out
}

fn key() -> FragmentKey {
    FragmentKey {
        src: Ipv4Addr::from(CLIENT),
        dst: Ipv4Addr::from(VIP),
        protocol: 17,
        ident: 0x4242,
    }
}

#[test]
fn first_fragment_with_ports_is_refused() {
    // UDP header (ports 5000 -> 53, length 2008) and the first 1472 payload bytes.
    let mut first = vec![0x13, 0x88, 0x00, 0x35, 0x07, 0xd8, 0x00, 0x00];
    first.extend_from_slice(&[0xab; 1472]);
    let frame = fragment(true, 0, &first);
    assert_eq!(parse_bytes(&frame), Err(Reason::FirstFragment));
    assert_eq!(FragmentKey::of(&frame), Some((key(), Fragmentation::First)));
}

#[test]
fn later_and_last_fragments_are_refused() {
    let middle = fragment(true, 185, &[0xab; 1480]);
    assert_eq!(parse_bytes(&middle), Err(Reason::LaterFragment));
    assert_eq!(
        FragmentKey::of(&middle),
        Some((key(), Fragmentation::Later { offset_bytes: 1480 }))
    );
    let last = fragment(false, 370, &[0xab; 48]);
    assert_eq!(parse_bytes(&last), Err(Reason::LaterFragment));
    assert_eq!(
        FragmentKey::of(&last),
        Some((key(), Fragmentation::Later { offset_bytes: 2960 }))
    );
}

#[test]
fn a_whole_datagram_with_the_same_identification_passes() {
    let ip = Ip::new(CLIENT, VIP);
    let whole = udp_frame((CLIENT_MAC, DIRECTOR_IN_MAC), &ip, (5000, 53), b"query");
    assert!(parse_bytes(&whole).is_ok());
    assert_eq!(FragmentKey::of(&whole).unwrap().1, Fragmentation::Whole);
}
