//! The established fast path: a packet of a flow this worker already tracks, in the form
//! nearly every packet has, forwarded with the fewest steps (VPP and Katran split their
//! paths the same way).
//!
//! The steps: [`parse_common`] (fixed offsets, no options, no fragment), a read-only
//! [`Shard::peek_inbound`] in the bucket stage 1 hashed, the real server (which implies its
//! service) and its egress from the caches, then [`Shard::touch`]: the packet changes
//! nothing but the timer. Every condition that does not hold sends the frame
//! to the full path ([`Pipeline::process`]) before anything changed, so both paths give the
//! same result for every frame; only the number of instructions differs.
//!
//! [`Shard::peek_inbound`]: xvs_conntrack::Shard::peek_inbound
//! [`Shard::touch`]: xvs_conntrack::Shard::touch

use xvs_conntrack::{FlowKey, Protocol, TcpFlags};
use xvs_forwarders::{Frame, L4, PacketView, PacketView6, dr, parse_common, parse_common6};

use super::counters::add;
use super::v6::{endpoint6, forward6, socket6};
use super::{
    NO_BUCKET, Pipeline, Verdict, count_in, count_in_len, endpoint, finish, forward, socket,
};
use crate::service::spec::ForwardMethod;

/// What the fast path did with a frame.
pub(super) enum Fast<View = PacketView> {
    /// Forwarded or dropped, and counted.
    Done(Verdict),
    /// Not its case, nothing changed; the frame parsed as `view` (what [`parse`] or
    /// [`parse6`] gives).
    ///
    /// [`parse`]: xvs_forwarders::parse
    /// [`parse6`]: xvs_forwarders::parse6
    Parsed(View),
    /// Not its case, nothing changed; not parsed.
    Unparsed,
}

impl Pipeline {
    /// Forwards `frame` if it is an established flow's common packet; for every other frame
    /// changes and counts nothing, and hands back the view if it parsed one.
    #[inline(always)]
    pub(super) fn established(
        &mut self,
        frame: &mut Frame<'_>,
        bucket: usize,
        ingress: u8,
    ) -> Fast {
        if bucket == NO_BUCKET {
            return Fast::Unparsed;
        }
        let Some(view) = parse_common(frame.data()) else {
            return Fast::Unparsed;
        };
        match self.established_view(frame, &view, bucket, ingress) {
            Some(verdict) => Fast::Done(verdict),
            None => Fast::Parsed(view),
        }
    }

    #[inline(always)]
    fn established_view(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        bucket: usize,
        ingress: u8,
    ) -> Option<Verdict> {
        let (protocol, sport, dport, flags) = ports_and_flags(&view.l4)?;
        let shared = &self.shared;
        let key = FlowKey::new(
            protocol,
            endpoint(view.src, sport),
            endpoint(view.dst, dport),
        );
        let peeked = self.shard.peek_inbound(bucket, &key)?;
        // No classification needed: a real server is live only inside its service (its
        // identity includes the service's address), and the connection was made for that
        // service's (protocol, VIP, port) or its port-0 form, so the full path's `classify`
        // finds a service for this packet whenever `dest` is found. (A fwmark service's
        // connection outlives a reload that stops marking its ports, as an IPVS connection
        // outlives the iptables rule that marked its first packet.)
        // The cache vouches that the real server is live in the current snapshot.
        let (method, hop) = self.egress.cached(peeked.dest)?;
        debug_assert!(shared.snapshot.dest_method(peeked.dest) == Some(method));
        debug_assert!(
            shared
                .snapshot
                .service_for(protocol as u8, view.dst, dport)
                .is_some()
                || shared
                    .snapshot
                    .dest(peeked.dest)
                    .is_some_and(|(s, _, _)| matches!(
                        s.spec.addr,
                        crate::service::spec::ServiceAddr::Fwmark { .. }
                    ))
        );
        if hop.local {
            return None;
        }
        let flow = self.shard.touch(&peeked, flags, self.clock.secs)?;
        // Committed: from here on the packet is this path's.
        let counters = &*shared.counters;
        add(&counters.rx_frames, 1);
        if shared
            .sync
            .master
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            super::sync_out(self.shard.table(), &shared.sync, flow);
        }
        count_in(counters, peeked.dest, view);
        // DR within the MTU, the most common forward of all: the MAC rewrite alone.
        let verdict = if method == ForwardMethod::Route && view.ip_total_len <= hop.egress.mtu {
            finish(
                counters,
                dr::readdress(frame, view, &hop.egress),
                hop.port,
                ingress,
                view.src,
            )
        } else {
            forward(
                shared,
                &mut self.tunnel_ident,
                frame,
                view,
                method,
                socket(self.shard.peeked_dest_addr(&peeked)),
                *hop,
                ingress,
            )
        };
        if let Verdict::Transmit { .. } = verdict {
            add(&counters.tx_frames, 1);
        }
        Some(verdict)
    }

    /// [`established`](Self::established) for an IPv6 frame: the same steps on
    /// [`parse_common6`]'s view (no extension header), with the IPv6 egress cache and
    /// rewrites.
    #[inline]
    pub(super) fn established6(
        &mut self,
        frame: &mut Frame<'_>,
        bucket: usize,
        ingress: u8,
    ) -> Fast<PacketView6> {
        if bucket == NO_BUCKET {
            return Fast::Unparsed;
        }
        let Some(view) = parse_common6(frame.data()) else {
            return Fast::Unparsed;
        };
        match self.established_view6(frame, &view, bucket, ingress) {
            Some(verdict) => Fast::Done(verdict),
            None => Fast::Parsed(view),
        }
    }

    #[inline(always)]
    fn established_view6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        bucket: usize,
        ingress: u8,
    ) -> Option<Verdict> {
        let (protocol, sport, dport, flags) = ports_and_flags(&view.l4)?;
        let shared = &self.shared;
        let key = FlowKey::new(
            protocol,
            endpoint6(view.src, sport),
            endpoint6(view.dst, dport),
        );
        let peeked = self.shard.peek_inbound(bucket, &key)?;
        // As for IPv4: a live real server implies its service, and the cache vouches for it.
        let (method, hop) = self.egress6.cached(peeked.dest)?;
        let target = socket6(self.shard.peeked_dest_addr(&peeked))?;
        if hop.local {
            return None;
        }
        let flow = self.shard.touch(&peeked, flags, self.clock.secs)?;
        // Committed: from here on the packet is this path's.
        let counters = &*shared.counters;
        add(&counters.rx_frames, 1);
        if shared
            .sync
            .master
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            super::sync_out(self.shard.table(), &shared.sync, flow);
        }
        count_in_len(counters, peeked.dest, view.datagram_len() as u64);
        let verdict = forward6(shared, frame, view, method, target, *hop, ingress);
        if let Verdict::Transmit { .. } = verdict {
            add(&counters.tx_frames, 1);
        }
        Some(verdict)
    }
}

/// The protocol, ports and TCP flags of a TCP or UDP packet that opens nothing (the fast
/// path's case, both families); `None` for ICMP or a packet that may open a connection.
#[inline(always)]
fn ports_and_flags(l4: &L4) -> Option<(Protocol, u16, u16, TcpFlags)> {
    let found = match *l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
        } => (
            Protocol::Tcp,
            src_port,
            dst_port,
            TcpFlags::from_byte(flags.0),
        ),
        L4::Udp { src_port, dst_port } => {
            (Protocol::Udp, src_port, dst_port, TcpFlags::from_byte(0))
        }
        L4::Icmp { .. } => return None,
    };
    (!found.3.opens()).then_some(found)
}
