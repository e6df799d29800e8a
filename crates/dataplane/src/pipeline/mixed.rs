//! A TUN real server of the other family. IPVS allows the mix for tunnels only: an IPv4
//! packet reaches an IPv6 real server inside IPv6 (IPv4-in-IPv6, next header 4), an IPv6
//! packet an IPv4 real server inside IPv4 (IPv6-in-IPv4, protocol 41). The egress is the
//! real server's family's, cached by its slot as for any real server; the gates (TTL or hop
//! limit, MTU) are the inner packet's, answered to the client in its own family.
//!
//! Such flows take the full path for every packet: the established fast path reads the
//! egress cache of the packet's family, which never holds a real server of the other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use xvs_conntrack::{DestId, Endpoint};
use xvs_forwarders::tun::{self, Tunnel, Tunnel6};
use xvs_forwarders::{Frame, PacketView, PacketView6};

use super::counters::Drop;
use super::v6::send_to_dest6;
use super::{Pipeline, Verdict, deliver_locally, finish, send_to_dest};
use crate::service::spec::ForwardMethod;

impl Pipeline {
    /// Sends an IPv4 frame to real server `dest` at `dest_addr` by `method`, in IPv6 when
    /// the real server is an IPv6 one.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn send_to(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        dest: DestId,
        method: ForwardMethod,
        dest_addr: Endpoint,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        match dest_addr.addr.to_ip() {
            IpAddr::V4(rip) => send_to_dest(
                &self.shared,
                &mut self.egress,
                &mut self.tunnel_ident,
                frame,
                view,
                dest,
                method,
                SocketAddrV4::new(rip, dest_addr.port),
                ingress,
            ),
            IpAddr::V6(rip) => self.tunnel_4in6(frame, view, dest, method, rip, ingress),
        }
    }

    /// [`send_to`](Self::send_to) for an IPv6 frame: in IPv4 when the real server is an
    /// IPv4 one.
    #[inline(always)]
    pub(super) fn send_to6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        dest: DestId,
        method: ForwardMethod,
        dest_addr: Endpoint,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        match dest_addr.addr.to_ip() {
            IpAddr::V6(rip) => send_to_dest6(
                &self.shared,
                &mut self.egress6,
                frame,
                view,
                dest,
                method,
                SocketAddrV6::new(rip, dest_addr.port, 0, 0),
                ingress,
            ),
            IpAddr::V4(rip) => self.tunnel_6in4(frame, view, dest, method, rip, ingress),
        }
    }

    /// IPv4-in-IPv6 toward IPv6 real server `rip`.
    #[cold]
    fn tunnel_4in6(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView,
        dest: DestId,
        method: ForwardMethod,
        rip: Ipv6Addr,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        // The service model takes a real server of the other family for TUN only.
        if method != ForwardMethod::Tunnel {
            return Err(Drop::NoRoute);
        }
        let shared = &self.shared;
        let hop = self.egress6.hop(shared, dest, method, rip)?;
        if hop.local {
            let start = usize::from(view.ip_offset);
            let datagram = start..start + usize::from(view.ip_total_len);
            return Ok(deliver_locally(shared, frame, datagram));
        }
        let source = hop.tunnel_source.ok_or(Drop::NoRoute)?;
        let tunnel = Tunnel6 {
            source,
            real_server: rip,
        };
        let result = tun::encapsulate_4in6(frame, view, &tunnel, &hop.egress);
        Ok(finish(
            &shared.counters,
            result,
            hop.port,
            ingress,
            view.src,
        ))
    }

    /// IPv6-in-IPv4 toward IPv4 real server `rip`.
    #[cold]
    fn tunnel_6in4(
        &mut self,
        frame: &mut Frame<'_>,
        view: &PacketView6,
        dest: DestId,
        method: ForwardMethod,
        rip: Ipv4Addr,
        ingress: u8,
    ) -> Result<Verdict, Drop> {
        if method != ForwardMethod::Tunnel {
            return Err(Drop::NoRoute);
        }
        let shared = &self.shared;
        let hop = self.egress.hop(shared, dest, method, rip)?;
        if hop.local {
            let start = usize::from(view.ip_offset);
            return Ok(deliver_locally(
                shared,
                frame,
                start..start + view.datagram_len(),
            ));
        }
        let source = hop.tunnel_source.ok_or(Drop::NoRoute)?;
        self.tunnel_ident = self.tunnel_ident.wrapping_add(1);
        let tunnel = Tunnel {
            source,
            real_server: rip,
            ident: self.tunnel_ident,
        };
        let result = tun::encapsulate_6in4(frame, view, &tunnel, &hop.egress);
        Ok(finish(
            &shared.counters,
            result,
            hop.port,
            ingress,
            view.src,
        ))
    }
}
