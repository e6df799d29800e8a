//! The IPv6 half of the pipeline: the same stages as IPv4's ([`super`]), on the
//! forwarders' IPv6 view ([`PacketView6`]) and rewrites.
//!
//! Classification reads the snapshot's IPv6 table, connections live in the same table
//! (its keys hold either family), scheduling and persistence are shared code
//! ([`Pipeline::place`]), and the egress toward IPv6 real servers has its own cache beside
//! IPv4's. Malformed frames, fragments and extension-header chains the forwarders refuse
//! are counted by their [`Reason`](xvs_forwarders::Reason) and dropped, as for IPv4.
//!
//! An established flow's common IPv6 packet takes the fast path (`established.rs`), as
//! IPv4's does; every other IPv6 frame comes here.
//!
//! A TUN real server of the other family is `mixed.rs`'s. An ICMPv6 error quoting one of
//! the director's own IPv6-in-IPv6 packets is answered to the client from the VIP, as the
//! IPv4 path answers errors about its IPIP packets; one quoting an IPv4-in-IPv6 packet is
//! refused by the forwarders (`icmp_quoted_protocol`).

use std::net::{Ipv6Addr, SocketAddrV6};

use xvs_conntrack::{Conn, Endpoint, FlowKey, Protocol, TcpFlags};
use xvs_forwarders::icmp6::{self, Icmpv6ErrorView};
use xvs_forwarders::tun::Tunnel6;
use xvs_forwarders::{Frame, PacketView6, dr, nat, parse6, tun};

use super::counters::{Drop, add};
use super::{
    EgressCache, Hop, Pipeline, Placed, Shared, Verdict, count_in_len, deliver_locally, finish,
    refuse, relay, sync_out,
};
use crate::service::spec::ForwardMethod;

impl Pipeline {
    /// Processes one received IPv6 frame in place; `bucket` is its inbound bucket if stage
    /// 1 hashed it (else [`super::NO_BUCKET`]).
    pub(super) fn process6(
        &mut self,
        frame: &mut Frame<'_>,
        bucket: usize,
        ingress: u8,
    ) -> Verdict {
        let counters = &*self.shared.counters;
        let view = match parse6(frame) {
            Ok(view) => view,
            Err(reason) => {
                add(&counters.rx_frames, 1);
                return refuse(counters, reason);
            }
        };
        self.process_parsed6(frame, &view, bucket, ingress)
    }

    /// [`process6`](Self::process6) after [`parse6`], for a frame whose `view` is known.
    pub(super) fn process_parsed6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        bucket: usize,
        ingress: u8,
    ) -> Verdict {
        add(&self.shared.counters.rx_frames, 1);
        let view = *view;
        let outcome = if view.is_icmp_error() {
            self.icmp_error6(frame, &view, ingress)
        } else {
            match view.ports() {
                Some((sport, dport)) => {
                    self.tcp_or_udp6(frame, &view, sport, dport, bucket, ingress)
                }
                None => Err(Drop::NotForUs),
            }
        };
        let counters = &*self.shared.counters;
        match outcome {
            Ok(verdict @ Verdict::Transmit { .. }) => {
                add(&counters.tx_frames, 1);
                verdict
            }
            Ok(Verdict::Drop) => Verdict::Drop,
            Err(why) => {
                counters.drop(why);
                Verdict::Drop
            }
        }
    }

    fn tcp_or_udp6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        sport: u16,
        dport: u16,
        bucket: usize,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let protocol = view.protocol();
        let key = FlowKey::new(
            Protocol::from_u8(protocol),
            endpoint6(view.src, sport),
            endpoint6(view.dst, dport),
        );
        if let Some(service) = self.shared.snapshot.service_for6(protocol, view.dst, dport) {
            return self.inbound6(frame, view, service, &key, bucket, ingress);
        }
        let conn = self
            .shard
            .table()
            .lookup_outbound(&key)
            .ok_or(Drop::NotForUs)?;
        self.outbound6(frame, view, &conn, ingress)
    }

    /// Client -> IPv6 virtual service.
    fn inbound6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        service_index: usize,
        key: &FlowKey,
        bucket: usize,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let flags = TcpFlags::from_byte(view.tcp_flags().map_or(0, |f| f.0));
        let placed = self.place(service_index, key, flags, bucket)?;
        let shared = &self.shared;
        let (dest_id, method, dest_addr) = match placed {
            Placed::OnePacket {
                dest,
                method,
                dest_addr,
            } => (dest, method, dest_addr),
            Placed::Tracked {
                flow,
                dest,
                dest_addr,
            } => {
                if shared
                    .sync
                    .master
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    sync_out(self.shard.table(), &shared.sync, flow);
                }
                let method = shared.snapshot.dest_method(dest).ok_or(Drop::DestRemoved)?;
                (dest, method, dest_addr)
            }
        };
        count_in_len(&shared.counters, dest_id, view.datagram_len() as u64);
        self.send_to6(frame, view, dest_id, method, dest_addr, ingress)
    }

    /// IPv6 real server -> client, the reply of a NAT connection.
    fn outbound6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        conn: &Conn,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let flags = TcpFlags::from_byte(view.tcp_flags().map_or(0, |f| f.0));
        self.track_reply(conn, flags, view.datagram_len() as u64);
        let shared = &self.shared;
        let vip = socket6(conn.vip).ok_or(Drop::NotForUs)?;
        relay(shared, view.dst, ingress, view.src, |egress| {
            nat::rewrite_outbound_v6(frame, view, vip, egress)
        })
    }

    /// An ICMPv6 error about a connection: relayed to the side that sent the quoted packet
    /// (IPVS `ip_vs_in_icmp_v6` / `ip_vs_out_icmp_v6`).
    fn icmp_error6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        let shared = &self.shared;
        let snapshot = &*shared.snapshot;
        let error: Icmpv6ErrorView = match icmp6::parse_error_v6(frame, view) {
            Ok(e) => e,
            Err(reason) => return Ok(refuse(&shared.counters, reason)),
        };
        let quoted = error.flow;
        let (sender, receiver) = (*quoted.src.ip(), *quoted.dst.ip());
        if let Some(tunnel) = error.tunnel {
            // About one of our IPv6-in-IPv6 packets: the client hears it from the VIP, as
            // for IPIP.
            return self.answer_about_tunnel(
                (tunnel.source, tunnel.real_server),
                quoted.protocol,
                (sender, quoted.src.port()),
                (receiver, quoted.dst.port()),
                (ingress, view.src),
                |egress| icmp6::answer_tunnel_error_v6(frame, view, &error, egress),
            );
        }
        // The connection's own direction is the reverse of the quoted packet's.
        let key = FlowKey::new(
            Protocol::from_u8(quoted.protocol),
            endpoint6(receiver, quoted.dst.port()),
            endpoint6(sender, quoted.src.port()),
        );
        if snapshot
            .service_for6(quoted.protocol, sender, quoted.src.port())
            .is_some()
        {
            // Quotes a reply VIP -> client: the connection is client -> VIP, possibly in
            // another worker's shard (the error's RSS hash is not the flow's).
            let conn = self
                .shard
                .table()
                .lookup_inbound_any(&key)
                .ok_or(Drop::IcmpNoConnection)?;
            let (_, dest, _) = snapshot.dest(conn.dest).ok_or(Drop::DestRemoved)?;
            if dest.spec.method != ForwardMethod::Masq {
                let method = dest.spec.method;
                return self.send_to6(frame, view, conn.dest, method, conn.dest_addr, ingress);
            }
            let target = socket6(conn.dest_addr).ok_or(Drop::IcmpNoConnection)?;
            return relay(shared, *target.ip(), ingress, view.src, |egress| {
                icmp6::rewrite_toward_real_server_v6(frame, view, &error, target, egress)
            });
        }
        // Quotes client -> RIP from a NAT real server: the reply key is RIP -> client.
        let conn = self
            .shard
            .table()
            .lookup_outbound(&key)
            .ok_or(Drop::IcmpNoConnection)?;
        let vip = socket6(conn.vip).ok_or(Drop::IcmpNoConnection)?;
        relay(shared, sender, ingress, view.src, |egress| {
            icmp6::rewrite_toward_client_v6(frame, view, &error, vip, egress)
        })
    }
}

/// Sends the IPv6 frame to real server `dest` at `target` by `method`.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_to_dest6(
    shared: &Shared,
    egress: &mut EgressCache<Ipv6Addr>,
    frame: &mut Frame<'_>,
    view: &PacketView6,
    dest: xvs_conntrack::DestId,
    method: ForwardMethod,
    target: SocketAddrV6,
    ingress: u8,
) -> Result<Verdict, Drop> {
    let hop = egress.hop(shared, dest, method, *target.ip())?;
    Ok(forward6(shared, frame, view, method, target, hop, ingress))
}

/// Rewrites an IPv6 frame for the real server's forwarding method, leaving by `hop`: DR
/// re-addresses the Ethernet frame, NAT rewrites the destination, TUN puts an outer IPv6
/// header in front (IPv6-in-IPv6). Oversized packets are answered with a Packet Too Big
/// (rate limited as every ICMP error the director sends, see [`finish`]).
pub(super) fn forward6(
    shared: &Shared,
    frame: &mut Frame<'_>,
    view: &PacketView6,
    method: ForwardMethod,
    target: SocketAddrV6,
    hop: Hop<Ipv6Addr>,
    ingress: u8,
) -> Verdict {
    let counters = &*shared.counters;
    if hop.local {
        let start = usize::from(view.ip_offset);
        return deliver_locally(shared, frame, start..start + view.datagram_len());
    }
    let result = match method {
        ForwardMethod::Tunnel => match hop.tunnel_source {
            Some(source) => {
                let tunnel = Tunnel6 {
                    source,
                    real_server: *target.ip(),
                };
                tun::encapsulate_6in6(frame, view, &tunnel, &hop.egress)
            }
            None => {
                counters.drop(Drop::NoRoute);
                return Verdict::Drop;
            }
        },
        ForwardMethod::Masq => nat::rewrite_inbound_v6(frame, view, target, &hop.egress),
        ForwardMethod::Route => dr::forward_v6(frame, view, &hop.egress),
    };
    finish(counters, result, hop.port, ingress, view.src)
}

#[inline]
pub(super) fn endpoint6(addr: Ipv6Addr, port: u16) -> Endpoint {
    Endpoint::new(xvs_conntrack::Addr::v6(addr.octets()), port)
}

/// An IPv6 endpoint as a socket address; None for an IPv4 one (a connection of the other
/// family cannot be an IPv6 packet's).
#[inline]
pub(super) fn socket6(endpoint: Endpoint) -> Option<SocketAddrV6> {
    match endpoint.addr.to_ip() {
        std::net::IpAddr::V6(a) => Some(SocketAddrV6::new(a, endpoint.port, 0, 0)),
        std::net::IpAddr::V4(_) => None,
    }
}
