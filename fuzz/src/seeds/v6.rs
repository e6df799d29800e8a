//! The IPv6 half of the seed corpus: the lab's IPv6 flows under each method, their NAT
//! replies, ICMPv6 errors from both sides and about our IPv6-in-IPv6 packets, extension
//! headers and fragments, hop limit 1, oversized packets at small MTUs, truncated frames,
//! and mixed-family TUN traffic (IPv6-in-IPv4, IPv4-in-IPv6) both ways.

use std::net::Ipv6Addr;

use super::{
    CLIENT_PORT, Packet, UDP_CLIENT_PORT, config, flags, input, over_time, tcp_segment,
    udp_datagram,
};
use crate::input::Ctl;
use crate::lab::{
    self, CLIENT, CLIENT_MAC, CLIENT6, DIP, DIP6, DIRECTOR_MAC, GATEWAY, GATEWAY_MAC, GATEWAY6,
    INTERNAL_MAC, NAT_SERVERS6, NAT_TCP_PORT, NAT_UDP_PORT, REMOTE_CLIENT6, TUN_SERVERS,
    TUN_SERVERS6, VIP, VIP6, VIP6_ANY_PORT,
};
use crate::repair::repair;

const HOP_BY_HOP: u8 = 0;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;

/// An Ethernet/IPv6 packet to build.
#[derive(Debug, Clone)]
pub struct Packet6 {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    protocol: u8,
    hop_limit: u8,
    /// Extension headers in order: their kind and their bytes after the next-header byte.
    extensions: Vec<(u8, Vec<u8>)>,
    l4: Vec<u8>,
}

impl Packet6 {
    fn new(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, l4: Vec<u8>) -> Self {
        Packet6 {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            src,
            dst,
            protocol,
            hop_limit: 64,
            extensions: Vec::new(),
            l4,
        }
    }

    /// A TCP segment `src` -> `dst` with `flags` and `payload`.
    pub fn tcp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8, payload: &[u8]) -> Self {
        Packet6::new(src.0, dst.0, 6, tcp_segment(src.1, dst.1, flags, payload))
    }

    /// A UDP datagram `src` -> `dst` carrying `payload`.
    pub fn udp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), payload: &[u8]) -> Self {
        Packet6::new(src.0, dst.0, 17, udp_datagram(src.1, dst.1, payload))
    }

    /// An ICMPv6 message: type, code, the 4 bytes after the checksum, then `body`.
    pub fn icmp(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, rest: u32, body: &[u8]) -> Self {
        let mut l4 = vec![kind, code, 0, 0];
        l4.extend_from_slice(&rest.to_be_bytes());
        l4.extend_from_slice(body);
        Packet6::new(src, dst, 58, l4)
    }

    /// "Packet too big" with `mtu` from `src` to `dst`, quoting `quoted` (a frame).
    pub fn too_big(src: Ipv6Addr, dst: Ipv6Addr, mtu: u32, quoted: &[u8]) -> Self {
        Packet6::icmp(src, dst, 2, 0, mtu, &quoted[14..])
    }

    /// Sets the MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Sets the hop limit.
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Adds a hop-by-hop or destination options header of 8 bytes (one PadN option).
    pub fn options(mut self, kind: u8) -> Self {
        self.extensions.push((kind, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }

    /// Adds a fragment header at `offset` (8-byte units) with the more-fragments flag `more`.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        let word = offset << 3 | u16::from(more);
        let mut header = vec![0];
        header.extend_from_slice(&word.to_be_bytes());
        header.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
        self.extensions.push((FRAGMENT, header));
        self
    }

    /// The frame, lengths and checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x86, 0xdd]);
        let kinds: Vec<u8> = self.extensions.iter().map(|(kind, _)| *kind).collect();
        let first = kinds.first().copied().unwrap_or(self.protocol);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, first, self.hop_limit]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        for (i, (_, bytes)) in self.extensions.iter().enumerate() {
            f.push(kinds.get(i + 1).copied().unwrap_or(self.protocol));
            f.extend_from_slice(bytes);
        }
        f.extend_from_slice(&self.l4);
        repair(&mut f, Ctl(Ctl::REPAIR));
        f
    }
}

fn syn6() -> Vec<u8> {
    client_tcp6(flags::SYN, &[])
}

fn client_tcp6(flags: u8, payload: &[u8]) -> Vec<u8> {
    Packet6::tcp((CLIENT6, CLIENT_PORT), (VIP6, 80), flags, payload).build()
}

fn client_udp6(payload: &[u8]) -> Vec<u8> {
    Packet6::udp((CLIENT6, UDP_CLIENT_PORT), (VIP6, 53), payload).build()
}

/// An IPv6 NAT real server's reply to the client's TCP flow.
fn nat_reply6(flags: u8) -> Vec<u8> {
    Packet6::tcp(
        (NAT_SERVERS6[0], NAT_TCP_PORT),
        (CLIENT6, CLIENT_PORT),
        flags,
        &[],
    )
    .macs(lab::server_mac(1, 0), INTERNAL_MAC)
    .build()
}

fn nat_udp_reply6() -> Vec<u8> {
    Packet6::udp(
        (NAT_SERVERS6[0], NAT_UDP_PORT),
        (CLIENT6, UDP_CLIENT_PORT),
        b"answer",
    )
    .macs(lab::server_mac(1, 0), INTERNAL_MAC)
    .build()
}

/// A Packet Too Big from the client's side about the reply [VIP]:80 -> client.
fn client_side_error6() -> Vec<u8> {
    let reply = Packet6::tcp(
        (VIP6, 80),
        (CLIENT6, CLIENT_PORT),
        flags::SYN | flags::ACK,
        &[],
    )
    .build();
    Packet6::too_big(GATEWAY6, VIP6, 1280, &reply)
        .macs(GATEWAY_MAC, DIRECTOR_MAC)
        .build()
}

/// A port unreachable from an IPv6 NAT real server about the client's packet to it.
fn server_side_error6() -> Vec<u8> {
    let forwarded = Packet6::tcp(
        (CLIENT6, CLIENT_PORT),
        (NAT_SERVERS6[0], NAT_TCP_PORT),
        flags::ACK,
        &[],
    )
    .build();
    Packet6::icmp(NAT_SERVERS6[0], CLIENT6, 1, 4, 0, &forwarded[14..])
        .macs(lab::server_mac(1, 0), INTERNAL_MAC)
        .build()
}

/// A Packet Too Big from a router about one of our IPv6-in-IPv6 packets to a TUN server:
/// it quotes our outer IPv6 header and the client's packet, as much as fits 1280 bytes (the
/// client's 1460-byte packet does not fit the path once encapsulated, so the director
/// tells the client).
fn tunnel_error6() -> Vec<u8> {
    let outer = tunnel_packet6(1400);
    let quoted = &outer[..14 + 1280 - 48];
    Packet6::too_big(GATEWAY6, DIP6, 1280, quoted)
        .macs(GATEWAY_MAC, DIRECTOR_MAC)
        .build()
}

/// A Time Exceeded from a router about one of our IPv6-in-IPv6 packets.
fn tunnel_time_exceeded6() -> Vec<u8> {
    let outer = tunnel_packet6(8);
    Packet6::icmp(GATEWAY6, DIP6, 3, 0, 0, &outer[14..])
        .macs(GATEWAY_MAC, DIRECTOR_MAC)
        .build()
}

/// Our IPv6-in-IPv6 packet to the first TUN server carrying the client's ACK with `data`
/// bytes.
fn tunnel_packet6(data: usize) -> Vec<u8> {
    let inner = client_tcp6(flags::ACK, &vec![0; data]);
    Packet6::new(DIP6, TUN_SERVERS6[0], 41, inner[14..].to_vec()).build()
}

/// The IPv6 records of a client's TCP connection and UDP exchange, the replies and errors
/// each method sees (ingress 1 for what NAT real servers send), and a reset.
fn conversation6() -> Vec<(u8, Vec<u8>)> {
    let from_client = Ctl::REPAIR;
    let from_server = Ctl::REPAIR | Ctl::INGRESS;
    vec![
        (from_client, syn6()),
        (from_server, nat_reply6(flags::SYN | flags::ACK)),
        (from_client, client_tcp6(flags::ACK, &[])),
        (
            from_client,
            client_tcp6(flags::ACK | flags::PSH, b"GET / HTTP/1.0\r\n\r\n"),
        ),
        (from_server, nat_reply6(flags::ACK | flags::PSH)),
        (from_client, client_side_error6()),
        (from_server, server_side_error6()),
        (from_client, tunnel_error6()),
        (from_client, tunnel_time_exceeded6()),
        (from_client, client_udp6(b"query")),
        (from_server, nat_udp_reply6()),
        (from_client, client_tcp6(flags::FIN | flags::ACK, &[])),
        (from_server, nat_reply6(flags::FIN | flags::ACK)),
        (from_client, client_tcp6(flags::ACK, &[])),
        (from_client, client_tcp6(flags::RST, &[])),
    ]
}

/// Client ports of the mixed-family seeds: one connection to each of pool 3's five real
/// servers (round robin), the last of them the TUN server of the other family.
const MIXED_PORTS: std::ops::Range<u16> = 41000..41005;

/// Both families' connections to pool 3's servers, data on each (`payload`), and the
/// errors a router sends about our mixed-family tunnel packets to them: "fragmentation
/// needed" about IPv6-in-IPv4, Packet Too Big about IPv4-in-IPv6.
fn mixed_family(payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let tcp4 = |port, flags, payload: &[u8]| {
        Packet::tcp((CLIENT, port), (VIP, 80), flags, payload).build()
    };
    let tcp6 = |port, flags, payload: &[u8]| {
        Packet6::tcp((CLIENT6, port), (VIP6, 80), flags, payload).build()
    };
    let mut records = Vec::new();
    for port in MIXED_PORTS {
        records.push((Ctl::REPAIR, tcp4(port, flags::SYN, &[])));
        records.push((Ctl::REPAIR, tcp6(port, flags::SYN, &[])));
    }
    for port in MIXED_PORTS {
        records.push((Ctl::REPAIR, tcp4(port, flags::ACK, payload)));
        records.push((Ctl::REPAIR, tcp6(port, flags::ACK, payload)));
    }
    for port in MIXED_PORTS {
        let inner6 = tcp6(port, flags::ACK, &[0; 8]);
        let six_in_four = Packet::new(DIP, TUN_SERVERS[1], 41, inner6[14..].to_vec()).build();
        let quoted = &six_in_four[14..14 + 20 + 40 + 8];
        let error = Packet::icmp(GATEWAY, DIP, 3, 4, 1300, quoted).macs(GATEWAY_MAC, DIRECTOR_MAC);
        records.push((Ctl::REPAIR, error.build()));
        let inner4 = tcp4(port, flags::ACK, &[0; 8]);
        let four_in_six = Packet6::new(DIP6, TUN_SERVERS6[1], 4, inner4[14..].to_vec()).build();
        let error = Packet6::too_big(GATEWAY6, DIP6, 1280, &four_in_six);
        records.push((Ctl::REPAIR, error.macs(GATEWAY_MAC, DIRECTOR_MAC).build()));
    }
    records
}

/// Extension headers, fragments, an over-long chain, truncated and malformed IPv6 frames
/// (each on its own client port, so each is a new flow).
fn odd_frames6() -> Vec<(u8, Vec<u8>)> {
    let syn_from = |port| Packet6::tcp((CLIENT6, port), (VIP6, 80), flags::SYN, &[]);
    let udp_from = |port| Packet6::udp((CLIENT6, port), (VIP6, 53), &[7; 64]);
    let mut long_chain = syn_from(42006);
    for _ in 0..12 {
        long_chain = long_chain.options(DEST_OPTS);
    }
    let mut long_payload_length = syn6();
    long_payload_length[19] += 8;
    let mut zero_udp_checksum = client_udp6(b"none");
    zero_udp_checksum[60..62].fill(0);
    let mut version4 = syn6();
    version4[14] = 0x40;
    vec![
        (Ctl::REPAIR, syn_from(42000).options(HOP_BY_HOP).build()),
        (Ctl::REPAIR, syn_from(42001).options(DEST_OPTS).build()),
        (
            Ctl::REPAIR,
            syn_from(42002)
                .options(HOP_BY_HOP)
                .options(DEST_OPTS)
                .build(),
        ),
        (Ctl::REPAIR, udp_from(42003).fragment(0, true).build()),
        (Ctl::REPAIR, udp_from(42003).fragment(9, false).build()),
        (Ctl::REPAIR, syn_from(42005).fragment(0, false).build()),
        (Ctl::REPAIR, long_chain.build()),
        (
            Ctl::REPAIR,
            Packet6::icmp(CLIENT6, VIP6, 128, 0, 0x1234_0001, b"ping").build(),
        ),
        (0, syn6()[..14 + 30].to_vec()),
        (0, syn6()[..14 + 40 + 10].to_vec()),
        (0, long_payload_length),
        (0, zero_udp_checksum),
        (0, version4),
    ]
}

/// Inputs for the `pipeline` target over IPv6.
pub fn pipeline_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, pools, scheduler) in [
        ("dr6", 0b0000, 0),
        ("nat6", 0b0101, 0),
        ("tun6", 0b1010, 0),
        ("tun6-link-source", 0b1010, 0x80),
        ("mixed6", 0b1111, 0),
    ] {
        seeds.push((
            format!("{name}-conversation"),
            input(config(pools, scheduler, 0), &conversation6()),
        ));
    }
    seeds.push((
        "mixed-family-tun".into(),
        input(config(0b1111, 0, 0), &mixed_family(b"data")),
    ));
    // At an external MTU of 576 the big packets need a Packet Too Big (or fragmentation
    // needed) once encapsulated.
    seeds.push((
        "small-mtu-mixed-family-tun".into(),
        input(config(0b1111, 0x20, 0), &mixed_family(&[0x61; 1000])),
    ));
    let remote_syn = Packet6::tcp(
        (REMOTE_CLIENT6, 41000),
        (VIP6_ANY_PORT, 8443),
        flags::SYN,
        &[],
    )
    .macs(GATEWAY_MAC, DIRECTOR_MAC)
    .build();
    seeds.push((
        "persistent-any-port6".into(),
        input(
            config(0b0101_0001, 9, 0),
            &[
                (Ctl::REPAIR, remote_syn.clone()),
                (Ctl::REPAIR, syn6()),
                (
                    Ctl::REPAIR,
                    Packet6::tcp((CLIENT6, 40002), (VIP6, 80), flags::SYN, &[]).build(),
                ),
            ],
        ),
    ));
    // Too big at a small MTU, hop limit 1.
    let big = client_tcp6(flags::ACK, &[0x61; 1000]);
    let big_udp = Packet6::udp((CLIENT6, UDP_CLIENT_PORT), (VIP6, 53), &[0x62; 900]).build();
    let hop1 = Packet6::tcp((CLIENT6, 40003), (VIP6, 80), flags::SYN, &[])
        .hop_limit(1)
        .build();
    for (name, services, scheduler, options) in [
        ("small-mtu-nat6", 0b0010_0101, 0x10, 0),
        ("small-mtu-tun6", 0b0010_1010, 0x20, 1),
        ("small-mtu-dr6", 0b0010_0000, 0x20, 2),
        ("tiny-mtu-tun6-no-headroom", 0b1010, 0x30, 3),
    ] {
        seeds.push((
            name.into(),
            input(
                config(services, scheduler, options),
                &[
                    (Ctl::REPAIR, syn6()),
                    (Ctl::REPAIR, big.clone()),
                    (Ctl::REPAIR, big_udp.clone()),
                    (Ctl::REPAIR, hop1.clone()),
                ],
            ),
        ));
    }
    for (name, pools) in [("dr6", 0b0000), ("nat6", 0b0101), ("tun6", 0b1010)] {
        seeds.push((
            format!("extension-headers-{name}"),
            input(config(pools, 0, 0), &odd_frames6()),
        ));
    }
    // Unresolved neighbours, thresholds and a table of 8 entries.
    let mut refusals = odd_frames6();
    refusals.extend((0..10).map(|i| {
        let syn = Packet6::tcp((CLIENT6, 43000 + i), (VIP6, 80), flags::SYN, &[]);
        (Ctl::REPAIR, syn.build())
    }));
    refusals.push((Ctl::REPAIR, remote_syn));
    seeds.push((
        "refusals6".into(),
        input(config(0b1111, 0x43, 0x64), &refusals),
    ));
    seeds
}

/// Inputs for the `pipeline_sequence` target over IPv6 and mixed families.
pub fn sequence_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, pools, options) in [
        ("nat6", 0b0101, 0x04),
        ("dr6", 0b0000, 0),
        ("tun6", 0b1010, 0x04),
    ] {
        let ack = || client_tcp6(flags::ACK, &[]);
        let records = over_time(pools, conversation6(), &ack, syn6());
        seeds.push((
            format!("{name}-over-time"),
            input(config(pools, 0, options), &records),
        ));
    }
    let ack = || {
        let port = MIXED_PORTS.end - 1;
        Packet6::tcp((CLIENT6, port), (VIP6, 80), flags::ACK, &[]).build()
    };
    let records = over_time(0b1111, mixed_family(b"data"), &ack, syn6());
    seeds.push((
        "mixed-family-over-time".into(),
        input(config(0b1111, 0, 0x04), &records),
    ));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{Lab, TUN_SERVERS6};
    use xvs_dataplane::pipeline::Verdict;

    #[test]
    fn seed_frames_parse_with_etherparse() {
        for frame in [
            syn6(),
            nat_reply6(0x12),
            client_udp6(b"x"),
            client_side_error6(),
            server_side_error6(),
            tunnel_error6(),
            Packet6::tcp((CLIENT6, 1), (VIP6, 80), flags::SYN, &[])
                .options(HOP_BY_HOP)
                .options(DEST_OPTS)
                .build(),
        ] {
            let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            assert!(matches!(sliced.net, Some(etherparse::NetSlice::Ipv6(_))));
            assert!(sliced.transport.is_some(), "{frame:?}");
        }
    }

    #[test]
    fn odd_frames_are_accepted_by_the_xvs_parser_only_when_meant_to_be() {
        let accepted: Vec<bool> = odd_frames6()
            .iter()
            .map(|(_, frame)| xvs_forwarders::parse6_bytes(frame).is_ok())
            .collect();
        // Hop-by-hop, destination options, both, the two fragments, the atomic fragment,
        // the long chain, the echo request, then the truncated and malformed ones.
        let expected = [
            true, true, true, false, false, true, false, true, false, false, false, false, false,
        ];
        assert_eq!(accepted, expected);
    }

    /// The lab serves the IPv6 VIP by each method, and pool 3 reaches the TUN server of the
    /// other family from both VIPs: the seeds reach what they are named after.
    #[test]
    fn the_lab_forwards_ipv6_by_each_method_and_across_families() {
        let sent = |pools: u8, frames: &[Vec<u8>]| {
            let mut lab = Lab::new(config(pools, 0, 0), 1);
            lab.run_batch(0, 0, frames)
                .into_iter()
                .filter(|o| matches!(o.verdict, Verdict::Transmit { .. }))
                .map(|o| o.output)
                .collect::<Vec<_>>()
        };
        let dr = sent(0b0000, &[syn6()]);
        assert_eq!(dr[0][..6], lab::server_mac(0, 0)[..]);
        let nat = sent(0b0101, &[syn6()]);
        assert_eq!(nat[0][38..54], NAT_SERVERS6[0].octets()[..]);
        let tun = sent(0b1010, &[syn6()]);
        assert_eq!(
            (tun[0][20], &tun[0][38..54]),
            (41, &TUN_SERVERS6[0].octets()[..])
        );
        let syns: Vec<Vec<u8>> = mixed_family(b"x")
            .into_iter()
            .take(10)
            .map(|r| r.1)
            .collect();
        let mixed = sent(0b1111, &syns);
        let four_in_six = mixed
            .iter()
            .any(|f| f[12..14] == [0x86, 0xdd] && f[20] == 4);
        let six_in_four = mixed
            .iter()
            .any(|f| f[12..14] == [0x08, 0x00] && f[23] == 41);
        assert!(four_in_six && six_in_four, "{mixed:02x?}");
    }
}
