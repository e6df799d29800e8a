//! Cost of one in-place rewrite per forwarding method (DR, NAT in, NAT out, TUN), of the ICMP
//! error relay, and of parsing, on small TCP segments (64-byte-class frames, the packet-rate
//! worst case) and on full-size ones.
//!
//! Each rewrite runs on a fresh copy of the frame made outside the timed section
//! (`iter_batched_ref`), with a view parsed beforehand, so the figure is the rewrite alone;
//! `parse_then_nat_in` adds the parse, the per-packet cost the pipeline pays, and the
//! `batch64` group runs parse + rewrite over a 64-frame batch as a worker does (criterion
//! reports it per element).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use xvs_forwarders::tun::{self, Tunnel};
use xvs_forwarders::{Egress, Frame, PacketView, dr, icmp, nat, parse};

const HEADROOM: usize = 256;
const CLIENT: [u8; 4] = [203, 0, 113, 7];
const VIP: [u8; 4] = [192, 0, 2, 10];
const REAL_SERVER: [u8; 4] = [10, 1, 0, 21];

const EGRESS: Egress = Egress {
    src_mac: [2, 0xd1, 0, 0, 0, 2],
    dst_mac: [2, 0x55, 0, 0, 0, 0x21],
    mtu: 1500,
};

fn ip(src: [u8; 4], dst: [u8; 4]) -> IpHeaders {
    let mut header = Ipv4Header::new(0, 64, IpNumber::TCP, src, dst).unwrap();
    header.dont_fragment = true;
    IpHeaders::Ipv4(header, Default::default())
}

fn tcp(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: usize) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0xc1, 0, 0, 0, 1], [2, 0xd1, 0, 0, 0, 1])
        .ip(ip(src, dst))
        .tcp(ports.0, ports.1, 1, 29200)
        .ack(1);
    let mut out = Vec::new();
    builder.write(&mut out, &vec![0x5a; payload]).unwrap();
    out
}

fn icmp_frag_needed(quoted: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0x6e, 0, 0, 0, 0xfe], [2, 0xd1, 0, 0, 0, 1])
        .ip(ip([198, 51, 100, 1], VIP))
        .icmpv4_raw(3, 4, [0, 0, 5, 0x78]);
    let mut out = Vec::new();
    builder.write(&mut out, quoted).unwrap();
    out
}

const BATCH: usize = 64;

/// 64 copies of `frame`, each in its own UMEM-like buffer.
fn batch_of_64(frame: &[u8]) -> Vec<Vec<u8>> {
    (0..BATCH).map(|_| umem(frame)).collect()
}

/// A UMEM-like buffer: headroom, then the frame.
fn umem(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; HEADROOM];
    buf.extend_from_slice(frame);
    buf
}

fn view_of(frame: &[u8]) -> PacketView {
    let mut copy = frame.to_vec();
    parse(&Frame::whole(&mut copy)).unwrap()
}

/// Benchmarks `rewrite` on fresh copies of `frame` placed after the headroom.
fn bench_rewrite(
    c: &mut Criterion,
    name: &str,
    frame: &[u8],
    rewrite: impl Fn(&mut Frame<'_>, &PacketView),
) {
    let view = view_of(frame);
    let template = umem(frame);
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || template.clone(),
            |buf| {
                let mut frame = Frame::new(buf, HEADROOM, template.len() - HEADROOM).unwrap();
                rewrite(&mut frame, black_box(&view));
                black_box(frame.len());
            },
            BatchSize::SmallInput,
        )
    });
}

fn forwarders(c: &mut Criterion) {
    let rs = SocketAddrV4::new(Ipv4Addr::from(REAL_SERVER), 8080);
    let vs = SocketAddrV4::new(Ipv4Addr::from(VIP), 80);
    let tunnel = Tunnel {
        source: Ipv4Addr::new(10, 1, 0, 1),
        real_server: Ipv4Addr::from(REAL_SERVER),
        ident: 7,
    };
    for (size, payload) in [("small", 6), ("1500", 1460 - 20)] {
        let inbound = tcp(CLIENT, VIP, (40000, 80), payload);
        let outbound = tcp(REAL_SERVER, CLIENT, (8080, 40000), payload);

        bench_rewrite(c, &format!("forwarders/{size}/dr"), &inbound, |f, v| {
            dr::forward(f, v, &EGRESS).unwrap();
        });
        bench_rewrite(c, &format!("forwarders/{size}/nat_in"), &inbound, |f, v| {
            nat::rewrite_inbound(f, v, rs, &EGRESS).unwrap();
        });
        bench_rewrite(
            c,
            &format!("forwarders/{size}/nat_out"),
            &outbound,
            |f, v| {
                nat::rewrite_outbound(f, v, vs, &EGRESS).unwrap();
            },
        );
        bench_rewrite(c, &format!("forwarders/{size}/tun"), &inbound, |f, v| {
            tun::encapsulate(f, v, &tunnel, &EGRESS).unwrap();
        });
        bench_rewrite(c, &format!("forwarders/{size}/parse"), &inbound, |f, _| {
            black_box(parse(f).unwrap());
        });
        bench_rewrite(
            c,
            &format!("forwarders/{size}/parse_then_nat_in"),
            &inbound,
            |f, _| {
                let view = parse(f).unwrap();
                nat::rewrite_inbound(f, &view, rs, &EGRESS).unwrap();
            },
        );
    }

    // A batch of 64 small frames, parsed and rewritten in one pass (the worker's inner loop).
    let batch = batch_of_64(&tcp(CLIENT, VIP, (40000, 80), 6));
    let mut group = c.benchmark_group("forwarders/batch64");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, mode) in [("parse_dr", 0), ("parse_nat_in", 1), ("parse_tun", 2)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || batch.clone(),
                |buffers| {
                    for buf in buffers.iter_mut() {
                        let len = buf.len() - HEADROOM;
                        let mut frame = Frame::new(buf, HEADROOM, len).unwrap();
                        let view = parse(&frame).unwrap();
                        let sent = match mode {
                            0 => dr::forward(&mut frame, &view, &EGRESS),
                            1 => nat::rewrite_inbound(&mut frame, &view, rs, &EGRESS),
                            _ => tun::encapsulate(&mut frame, &view, &tunnel, &EGRESS),
                        };
                        black_box(sent.unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // ICMP "fragmentation needed" about a reply, relayed to the real server (rare path).
    let reply = tcp(VIP, CLIENT, (80, 40000), 100);
    let error = icmp_frag_needed(&reply[14..]);
    bench_rewrite(c, "forwarders/icmp_error_nat_in", &error, |f, v| {
        let quoted = icmp::parse_error(f, v).unwrap();
        icmp::rewrite_toward_real_server(f, v, &quoted, rs, &EGRESS).unwrap();
    });
}

criterion_group!(benches, forwarders);
criterion_main!(benches);
