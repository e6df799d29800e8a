//! What `xvs_forwarders::parse_bytes` and `icmp::parse_error` must answer for a frame,
//! worked out with etherparse's header slices: the same view on success, the same reason
//! on refusal (the checks in the order the headers define them).

use std::net::SocketAddrV4;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4HeaderSlice, TcpHeader, UdpHeader};
use xvs_forwarders::icmp::{IcmpErrorView, QuotedFlow, QuotedTunnel};
use xvs_forwarders::{L4, PacketView, Reason, TcpFlags};

use crate::repair::sum_verifies;

const ETH: usize = 14;

/// The view of `frame`, or why it is refused.
pub fn parse(frame: &[u8]) -> Result<PacketView, Reason> {
    let (eth, ip_bytes) = Ethernet2Header::from_slice(frame).map_err(|_| Reason::Truncated)?;
    if eth.ether_type != EtherType::IPV4 {
        return Err(Reason::NotIpv4);
    }
    let header = Ipv4HeaderSlice::from_slice(ip_bytes).map_err(|e| {
        use etherparse::err::ipv4::{HeaderError, HeaderSliceError};
        match e {
            HeaderSliceError::Len(_) => Reason::Truncated,
            HeaderSliceError::Content(HeaderError::UnexpectedVersion { .. }) => {
                Reason::BadIpVersion
            }
            HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { .. }) => {
                Reason::BadIpHeaderLength
            }
        }
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len || total_len > ip_bytes.len() {
        return Err(Reason::BadIpTotalLength);
    }
    if !sum_verifies(header.slice()) {
        return Err(Reason::BadIpChecksum);
    }
    if header.fragments_offset().value() != 0 {
        return Err(Reason::LaterFragment);
    }
    if header.more_fragments() {
        return Err(Reason::FirstFragment);
    }
    let payload = &ip_bytes[header_len..total_len];
    let l4 = match header.protocol() {
        IpNumber::TCP => {
            if payload.len() < 20 {
                return Err(Reason::Truncated);
            }
            let (tcp, _) = TcpHeader::from_slice(payload).map_err(|_| Reason::BadTcpHeader)?;
            L4::Tcp {
                src_port: tcp.source_port,
                dst_port: tcp.destination_port,
                flags: TcpFlags(payload[13]),
            }
        }
        IpNumber::UDP => {
            let (udp, _) = UdpHeader::from_slice(payload).map_err(|_| Reason::Truncated)?;
            if udp.length < 8 || usize::from(udp.length) > payload.len() {
                return Err(Reason::BadUdpLength);
            }
            L4::Udp {
                src_port: udp.source_port,
                dst_port: udp.destination_port,
            }
        }
        IpNumber::ICMP => {
            if payload.len() < 8 {
                return Err(Reason::Truncated);
            }
            let echo = matches!(payload[0], 0 | 8);
            L4::Icmp {
                kind: payload[0],
                code: payload[1],
                echo_id: if echo {
                    u16::from_be_bytes([payload[4], payload[5]])
                } else {
                    0
                },
            }
        }
        _ => return Err(Reason::UnsupportedProtocol),
    };
    Ok(PacketView {
        ip_offset: ETH as u16,
        l4_offset: (ETH + header_len) as u16,
        ip_total_len: total_len as u16,
        src: header.source_addr(),
        dst: header.destination_addr(),
        ttl: header.ttl(),
        tos: frame[ETH + 1],
        ident: header.identification(),
        dont_fragment: header.dont_fragment(),
        l4,
    })
}

/// The quote of the ICMP error `view` describes in `frame`, or why it is refused.
pub fn parse_error(frame: &[u8], view: &PacketView) -> Result<IcmpErrorView, Reason> {
    let L4::Icmp { kind, code, .. } = view.l4 else {
        return Err(Reason::NotIcmpError);
    };
    if !matches!(kind, 3 | 11) {
        return Err(Reason::NotIcmpError);
    }
    let icmp_at = usize::from(view.l4_offset);
    let message = &frame[icmp_at..view.ip_end()];
    if !sum_verifies(message) {
        return Err(Reason::BadIcmpChecksum);
    }
    let quote = &message[8..];
    let outer = quoted_header(quote)?;
    let (inner_at, inner, tunnel) = if outer.protocol() == IpNumber::IPV4 {
        let inner = quoted_header(&quote[outer.slice().len()..])?;
        let tunnel = QuotedTunnel {
            source: outer.source_addr(),
            real_server: outer.destination_addr(),
            dont_fragment: outer.dont_fragment(),
        };
        (outer.slice().len(), inner, Some(tunnel))
    } else {
        (0, outer, None)
    };
    if !matches!(inner.protocol(), IpNumber::TCP | IpNumber::UDP) {
        return Err(Reason::IcmpQuotedProtocol);
    }
    let ports = &quote[inner_at + inner.slice().len()..];
    let port = |at: usize| u16::from_be_bytes([ports[at], ports[at + 1]]);
    let quote_ip_offset = icmp_at + 8 + inner_at;
    Ok(IcmpErrorView {
        kind,
        code,
        next_hop_mtu: if kind == 3 && code == 4 {
            u16::from_be_bytes([message[6], message[7]])
        } else {
            0
        },
        quote_ip_offset: quote_ip_offset as u16,
        quote_l4_offset: (quote_ip_offset + inner.slice().len()) as u16,
        flow: QuotedFlow {
            protocol: inner.protocol().0,
            src: SocketAddrV4::new(inner.source_addr(), port(0)),
            dst: SocketAddrV4::new(inner.destination_addr(), port(2)),
        },
        tunnel,
    })
}

/// A quoted IPv4 header followed by at least 8 bytes, not a later fragment.
fn quoted_header(quote: &[u8]) -> Result<Ipv4HeaderSlice<'_>, Reason> {
    let header = Ipv4HeaderSlice::from_slice(quote).map_err(|_| Reason::IcmpQuoteTruncated)?;
    if quote.len() < header.slice().len() + 8 {
        return Err(Reason::IcmpQuoteTruncated);
    }
    if header.fragments_offset().value() != 0 {
        return Err(Reason::IcmpQuotesFragment);
    }
    Ok(header)
}
