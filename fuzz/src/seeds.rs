//! The seed corpus: real frames of the lab's flows, and fuzz inputs made of them.
//!
//! Frames are written header by header and then given their lengths and checksums by
//! [`repair`](crate::repair::repair); `examples/seeds.rs` writes the inputs under
//! `fuzz/corpus/<target>/`, where they are committed.

use std::net::Ipv4Addr;

use crate::input::{Ctl, write_record};
use crate::lab::{
    self, CLIENT, CLIENT_MAC, DIP, DIRECTOR_MAC, GATEWAY, GATEWAY_MAC, INTERNAL_MAC, LabConfig,
    NAT_SERVERS, NAT_TCP_PORT, NAT_UDP_PORT, REMOTE_CLIENT, TUN_SERVERS, VIP, VIP_ANY_PORT,
};
use crate::repair::repair;

pub mod v6;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// An Ethernet/IPv4 packet to build.
#[derive(Debug, Clone)]
pub struct Packet {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    flags_fragment: u16,
    options: Vec<u8>,
    l4: Vec<u8>,
}

impl Packet {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: Vec<u8>) -> Self {
        Packet {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            src,
            dst,
            protocol,
            ttl: 64,
            flags_fragment: 0x4000,
            options: Vec::new(),
            l4,
        }
    }

    /// A TCP segment `src` -> `dst` with `flags` and `payload` (as Linux sends: DF).
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> Self {
        Packet::new(src.0, dst.0, 6, tcp_segment(src.1, dst.1, flags, payload))
    }

    /// A UDP datagram `src` -> `dst` carrying `payload`.
    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Self {
        let mut p = Packet::new(src.0, dst.0, 17, udp_datagram(src.1, dst.1, payload));
        p.flags_fragment = 0;
        p
    }

    /// An ICMP message `src` -> `dst`: type, code, the 4 bytes after the checksum, then `body`.
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, rest: u32, body: &[u8]) -> Self {
        let mut l4 = vec![kind, code, 0, 0];
        l4.extend_from_slice(&rest.to_be_bytes());
        l4.extend_from_slice(body);
        let mut p = Packet::new(src, dst, 1, l4);
        p.flags_fragment = 0;
        p
    }

    /// "Fragmentation needed" with `mtu` from `src` to `dst`, quoting `quoted` (a frame).
    pub fn frag_needed(src: Ipv4Addr, dst: Ipv4Addr, mtu: u16, quoted: &[u8]) -> Self {
        Packet::icmp(src, dst, 3, 4, u32::from(mtu), quote(quoted))
    }

    /// "Time exceeded in transit" from `src` to `dst`, quoting `quoted` (a frame).
    pub fn time_exceeded(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Self {
        Packet::icmp(src, dst, 11, 0, 0, quote(quoted))
    }

    /// Sets the MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the flags and fragment offset word (DF 0x4000, MF 0x2000, offset in 8 bytes).
    pub fn fragment(mut self, word: u16) -> Self {
        self.flags_fragment = word;
        self
    }

    /// Adds IPv4 options (`words` 4-byte words of NOPs ending with end-of-list).
    pub fn options(mut self, words: usize) -> Self {
        self.options = vec![1; words * 4];
        if let Some(last) = self.options.last_mut() {
            *last = 0;
        }
        self
    }

    /// The frame, lengths and checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let ihl = 5 + self.options.len() / 4;
        f.push(0x40 | ihl as u8);
        f.extend_from_slice(&[0, 0, 0, 0x1c, 0x46]);
        f.extend_from_slice(&self.flags_fragment.to_be_bytes());
        f.extend_from_slice(&[self.ttl, self.protocol, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&self.options);
        f.extend_from_slice(&self.l4);
        repair(&mut f, Ctl(Ctl::REPAIR));
        f
    }
}

/// A TCP header from `sport` to `dport` with `flags`, then `payload` (checksum left 0).
fn tcp_segment(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    let ack = if flags & flags::ACK != 0 {
        0x2000_0000u32
    } else {
        0
    };
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// A UDP header from `sport` to `dport`, then `payload` (length and checksum left 0).
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// What an ICMP error quotes of `frame`: its IPv4 header and 8 bytes more.
fn quote(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    &frame[14..(14 + ihl + 8).min(frame.len())]
}

/// The client's TCP port in the seeds.
pub const CLIENT_PORT: u16 = 40000;
const UDP_CLIENT_PORT: u16 = 5000;

fn syn() -> Vec<u8> {
    Packet::tcp((CLIENT, CLIENT_PORT), (VIP, 80), flags::SYN, &[]).build()
}

fn client_tcp(flags: u8, payload: &[u8]) -> Vec<u8> {
    Packet::tcp((CLIENT, CLIENT_PORT), (VIP, 80), flags, payload).build()
}

fn client_udp(payload: &[u8]) -> Vec<u8> {
    Packet::udp((CLIENT, UDP_CLIENT_PORT), (VIP, 53), payload).build()
}

/// A NAT real server's reply to the client's TCP flow.
fn nat_reply(flags: u8) -> Vec<u8> {
    Packet::tcp(
        (NAT_SERVERS[0], NAT_TCP_PORT),
        (CLIENT, CLIENT_PORT),
        flags,
        &[],
    )
    .macs(lab::server_mac(1, 0), INTERNAL_MAC)
    .build()
}

fn nat_udp_reply() -> Vec<u8> {
    Packet::udp(
        (NAT_SERVERS[0], NAT_UDP_PORT),
        (CLIENT, UDP_CLIENT_PORT),
        b"answer",
    )
    .macs(lab::server_mac(1, 0), INTERNAL_MAC)
    .fragment(0x4000)
    .build()
}

/// An ICMP error from the client's side about the reply VIP:80 -> client.
fn client_side_error() -> Vec<u8> {
    let reply = Packet::tcp(
        (VIP, 80),
        (CLIENT, CLIENT_PORT),
        flags::SYN | flags::ACK,
        &[],
    )
    .build();
    Packet::frag_needed(GATEWAY, VIP, 1400, &reply)
        .macs(GATEWAY_MAC, DIRECTOR_MAC)
        .build()
}

/// An ICMP error from a NAT real server about the client's packet to it.
fn server_side_error() -> Vec<u8> {
    let forwarded = Packet::tcp(
        (CLIENT, CLIENT_PORT),
        (NAT_SERVERS[0], NAT_TCP_PORT),
        flags::ACK,
        &[],
    )
    .build();
    Packet::icmp(NAT_SERVERS[0], CLIENT, 3, 3, 0, quote(&forwarded))
        .macs(lab::server_mac(1, 0), INTERNAL_MAC)
        .build()
}

/// "Fragmentation needed" from a router about one of our IPIP packets to a TUN server.
fn tunnel_error() -> Vec<u8> {
    let inner = Packet::tcp((CLIENT, CLIENT_PORT), (VIP, 80), flags::ACK, &[0; 8]).build();
    let mut outer = inner[..14].to_vec();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 63, 4, 0, 0];
    ip.extend_from_slice(&DIP.octets());
    ip.extend_from_slice(&TUN_SERVERS[0].octets());
    outer.extend_from_slice(&ip);
    outer.extend_from_slice(&inner[14..]);
    repair(&mut outer, Ctl(Ctl::REPAIR));
    let quoted = &outer[14..14 + 20 + 20 + 8];
    Packet::icmp(GATEWAY, DIP, 3, 4, 1300, quoted)
        .macs(GATEWAY_MAC, DIRECTOR_MAC)
        .build()
}

/// One of every kind of frame, each as a parse-target input (`[ctl][frame]`).
pub fn parse_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("tcp-syn", Ctl::REPAIR, syn()),
        (
            "tcp-ack-data",
            Ctl::REPAIR,
            client_tcp(0x18, b"GET / HTTP/1.0\r\n\r\n"),
        ),
        ("tcp-fin", Ctl::REPAIR, client_tcp(0x11, &[])),
        ("tcp-rst", Ctl::REPAIR, client_tcp(flags::RST, &[])),
        ("udp", Ctl::REPAIR, client_udp(b"query")),
        ("nat-reply", Ctl::REPAIR, nat_reply(0x12)),
        ("icmp-client-side", Ctl::REPAIR, client_side_error()),
        ("icmp-server-side", Ctl::REPAIR, server_side_error()),
        ("icmp-tunnel", Ctl::REPAIR, tunnel_error()),
        (
            "icmp-echo",
            Ctl::REPAIR,
            Packet::icmp(CLIENT, VIP, 8, 0, 0x1234_0001, b"ping").build(),
        ),
        (
            "ip-options",
            Ctl::REPAIR,
            Packet::tcp((CLIENT, 40001), (VIP, 80), flags::SYN, &[])
                .options(2)
                .build(),
        ),
        (
            "first-fragment",
            Ctl::REPAIR,
            Packet::udp((CLIENT, 5001), (VIP, 53), &[7; 64])
                .fragment(0x2000)
                .build(),
        ),
        (
            "later-fragment",
            Ctl::FIX_IP,
            Packet::udp((CLIENT, 5001), (VIP, 53), &[7; 64])
                .fragment(0x0008)
                .build(),
        ),
        ("truncated-tcp", 0, syn()[..44].to_vec()),
        ("ethernet-only", 0, syn()[..14].to_vec()),
    ];
    let mut padded = syn();
    padded.extend_from_slice(&[0; 6]);
    seeds.push(("padded", Ctl::FIX_IP | Ctl::FIX_L4, padded));
    let mut bad_checksum = syn();
    bad_checksum[24] ^= 0x55;
    seeds.push(("bad-ip-checksum", 0, bad_checksum));
    let mut arp = syn()[..42].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    seeds.push(("arp", 0, arp));
    seeds
        .into_iter()
        .map(|(name, ctl, frame)| {
            let mut input = vec![ctl];
            input.extend_from_slice(&frame);
            (name.to_string(), input)
        })
        .collect()
}

/// A fuzz input: the config, then `(ctl, frame)` records.
fn input(config: LabConfig, records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = config.bytes().to_vec();
    for (ctl, frame) in records {
        write_record(&mut out, *ctl, frame);
    }
    out
}

/// Records of a client's TCP connection and UDP exchange, with the replies and errors each
/// method sees (ingress 1 for what NAT real servers send).
fn conversation() -> Vec<(u8, Vec<u8>)> {
    let from_client = Ctl::REPAIR;
    let from_server = Ctl::REPAIR | Ctl::INGRESS;
    vec![
        (from_client, syn()),
        (from_server, nat_reply(flags::SYN | flags::ACK)),
        (from_client, client_tcp(flags::ACK, &[])),
        (
            from_client,
            client_tcp(flags::ACK | flags::PSH, b"GET / HTTP/1.0\r\n\r\n"),
        ),
        (from_server, nat_reply(flags::ACK | flags::PSH)),
        (from_client, client_side_error()),
        (from_server, server_side_error()),
        (from_client, tunnel_error()),
        (from_client, client_udp(b"query")),
        (from_server, nat_udp_reply()),
        (from_client, client_tcp(flags::FIN | flags::ACK, &[])),
        (from_server, nat_reply(flags::FIN | flags::ACK)),
        (from_client, client_tcp(flags::ACK, &[])),
    ]
}

/// Inputs for the `pipeline` target: the conversation under each method, and the frames
/// the director must refuse or answer.
pub fn pipeline_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, pools) in [
        ("dr", 0b0000),
        ("nat", 0b0101),
        ("tun", 0b1010),
        ("mixed", 0b1111),
    ] {
        seeds.push((
            format!("{name}-conversation"),
            input(config(pools, 0, 0), &conversation()),
        ));
    }
    // Persistence, the port-0 service and a remote client behind the gateway.
    let remote_syn = Packet::tcp(
        (REMOTE_CLIENT, 41000),
        (VIP_ANY_PORT, 8443),
        flags::SYN,
        &[],
    )
    .macs(GATEWAY_MAC, DIRECTOR_MAC)
    .build();
    seeds.push((
        "persistent-any-port".into(),
        input(
            config(0b0101_0001, 9, 0),
            &[
                (Ctl::REPAIR, remote_syn.clone()),
                (Ctl::REPAIR, syn()),
                (
                    Ctl::REPAIR,
                    Packet::tcp((CLIENT, 40002), (VIP, 80), flags::SYN, &[]).build(),
                ),
            ],
        ),
    ));
    // Too big with DF at a small MTU, TTL 1, and a one-packet UDP service.
    let big = Packet::tcp((CLIENT, CLIENT_PORT), (VIP, 80), flags::ACK, &[0x61; 1000]).build();
    let big_udp = Packet::udp((CLIENT, UDP_CLIENT_PORT), (VIP, 53), &[0x62; 900])
        .fragment(0x4000)
        .build();
    let ttl1 = Packet::tcp((CLIENT, 40003), (VIP, 80), flags::SYN, &[])
        .ttl(1)
        .build();
    for (name, services, scheduler, options) in [
        ("small-mtu-nat", 0b0010_0101, 0x10, 0),
        ("small-mtu-tun", 0b0010_1010, 0x20, 1),
        ("tiny-mtu-tun-no-headroom", 0b1010, 0x30, 3),
    ] {
        seeds.push((
            name.into(),
            input(
                config(services, scheduler, options),
                &[
                    (Ctl::REPAIR, syn()),
                    (Ctl::REPAIR, big.clone()),
                    (Ctl::REPAIR, big_udp.clone()),
                    (Ctl::REPAIR, ttl1.clone()),
                ],
            ),
        ));
    }
    // A table of 8 entries meets ten new connections (and two clients of a persistent
    // service: templates take entries too).
    let syns: Vec<(u8, Vec<u8>)> = (0..10)
        .map(|i| {
            let syn = Packet::tcp((CLIENT, 41000 + i), (VIP, 80), flags::SYN, &[]).build();
            (Ctl::REPAIR, syn)
        })
        .chain([(Ctl::REPAIR, remote_syn.clone())])
        .collect();
    seeds.push((
        "table-full".into(),
        input(config(0b0101_0000, 3, 0x20), &syns),
    ));
    // Refusals: fragments, truncated frames, a bad checksum, unresolved neighbours, a full
    // table with thresholds.
    let parse = parse_seeds();
    let refusals: Vec<(u8, Vec<u8>)> = parse
        .iter()
        .map(|(_, seed)| (seed[0], seed[1..].to_vec()))
        .collect();
    seeds.push((
        "refusals".into(),
        input(config(0b1111, 0x43, 0x64), &refusals),
    ));
    seeds.extend(v6::pipeline_seeds());
    seeds
}

/// Inputs for the `pipeline_sequence` target: connections over time, across two workers
/// and through reloads that remove their real servers.
pub fn sequence_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, pools, options) in [
        ("nat", 0b0101, 0x04),
        ("dr", 0b0000, 0),
        ("tun", 0b1010, 0x04),
    ] {
        let records = over_time(
            pools,
            conversation(),
            &|| client_tcp(flags::ACK, &[]),
            syn(),
        );
        seeds.push((
            format!("{name}-over-time"),
            input(config(pools, 0, options), &records),
        ));
    }
    seeds.extend(v6::sequence_seeds());
    seeds
}

/// The lab config of `services`, `scheduler` and `options`.
fn config(services: u8, scheduler: u8, options: u8) -> LabConfig {
    LabConfig {
        services,
        scheduler,
        options,
    }
}

/// A `conversation` over time: the real servers' replies on the other worker, a tick, an
/// expiry before another `ack` and a new `syn`, and a reload to the other pools before the
/// flow's next packet.
fn over_time(
    pools: u8,
    mut records: Vec<(u8, Vec<u8>)>,
    ack: &dyn Fn() -> Vec<u8>,
    syn: Vec<u8>,
) -> Vec<(u8, Vec<u8>)> {
    let tick = 1 << 4;
    let expire = 2 << 4;
    let reload = 3 << 4;
    // The NAT replies arrive on the other worker (RSS hashes them elsewhere).
    for (ctl, _) in records.iter_mut() {
        if *ctl & Ctl::INGRESS != 0 {
            *ctl |= Ctl::WORKER;
        }
    }
    records[2].0 |= tick | Ctl::END_BATCH;
    records.push((Ctl::REPAIR | expire, ack()));
    records.push((Ctl::REPAIR, syn));
    // Reload to the other pools (the record's first byte is the new services byte), then
    // the flow's next packet.
    let mut reload_frame = ack();
    reload_frame[0] = pools ^ 0b0101;
    records.push((Ctl::REPAIR | reload, reload_frame));
    records.push((Ctl::REPAIR, ack()));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_frames_parse_with_etherparse() {
        for frame in [
            syn(),
            nat_reply(0x12),
            client_udp(b"x"),
            client_side_error(),
            server_side_error(),
            tunnel_error(),
        ] {
            let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            assert!(sliced.net.is_some());
            assert!(sliced.transport.is_some(), "{frame:?}");
        }
    }

    #[test]
    fn every_seed_is_accepted_by_the_xvs_parser_or_meant_to_be_refused() {
        for (name, seed) in parse_seeds() {
            let ok = xvs_forwarders::parse_bytes(&seed[1..]).is_ok();
            let refused = matches!(
                name.as_str(),
                "first-fragment"
                    | "later-fragment"
                    | "truncated-tcp"
                    | "ethernet-only"
                    | "bad-ip-checksum"
                    | "arp"
            );
            assert_eq!(ok, !refused, "{name}");
        }
    }
}
