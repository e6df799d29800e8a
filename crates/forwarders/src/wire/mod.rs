//! Typed views of the headers xvs reads and writes, in the smoltcp `wire` style: a
//! `Packet<T: AsRef<[u8]>>` wraps a byte buffer, getters read fields in place, setters on
//! `T: AsMut<[u8]>` write them, and nothing is copied or allocated.
//!
//! - [`EthernetFrame`] (Ethernet II), [`Ipv4Packet`] (RFC 791), [`TcpPacket`] (RFC 9293),
//!   [`UdpPacket`] (RFC 768), [`IcmpPacket`] (ICMPv4, RFC 792); for IPv6, [`Ipv6Packet`]
//!   (RFC 8200) with the bounded extension-header walk [`walk_extension_headers`], and
//!   [`Icmpv6Packet`] (RFC 4443), whose checksum covers the IPv6 pseudo-header, as the
//!   `*_v6` checksum methods of [`TcpPacket`] and [`UdpPacket`] do (a UDP checksum of 0
//!   does not verify over IPv6).
//! - `new_checked` refuses a buffer too short for what its header announces, with the
//!   [`Reason`] the forwarders count; after that no accessor can go out of bounds.
//!   `new_unchecked` trusts the caller: on a buffer `new_checked` would refuse, accessors
//!   may panic. The fast paths use it on fixed-size arrays (`&mut [u8; 20]`), where every
//!   fixed field is in bounds by construction and the compiler drops the checks.
//! - Checksums: `fill_checksum` and `verify_checksum` compute them in full (TCP and UDP with
//!   the IPv4 pseudo-header); the `*_patching` setters and [`Ipv4Packet::decrement_ttl`]
//!   keep them right incrementally (RFC 1624), reading only the words they change. The
//!   `*_noting` variants record the change in a [`Delta`] instead, so a rewrite that
//!   changes several words folds once.
//!
//! Field offsets live once, in the crate's private offset table (`field`), which the
//! forwarders' fixed-offset fast paths share with these views.

mod ethernet;
mod icmp;
mod icmpv6;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;

pub use crate::checksum::Delta;
pub use ethernet::EthernetFrame;
pub use icmp::IcmpPacket;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6Packet, MAX_EXTENSION_HEADERS, UpperLayer, walk_extension_headers};
pub use tcp::TcpPacket;
pub use tcp::flags as tcp_flags;
pub use udp::UdpPacket;

use crate::field;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = field::eth::HEADER_LEN;
/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = field::ipv4::MIN_HEADER_LEN;
/// Length of the IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = field::ipv6::HEADER_LEN;
/// Length of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = field::tcp::MIN_HEADER_LEN;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = field::udp::HEADER_LEN;
/// Length of an ICMP header (type, code, checksum and the 4 bytes that depend on the type).
pub const ICMP_HEADER_LEN: usize = field::icmp::HEADER_LEN;

/// EtherType values.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = crate::field::eth::ETHERTYPE_IPV4;
    /// IPv6.
    pub const IPV6: u16 = crate::field::eth::ETHERTYPE_IPV6;
}

/// IP protocol numbers.
pub mod protocol {
    use crate::field::ipv4;
    /// ICMP.
    pub const ICMP: u8 = ipv4::PROTO_ICMP;
    /// IP in IP (the IPIP tunnel TUN forwarding sends).
    pub const IPIP: u8 = ipv4::PROTO_IPIP;
    /// TCP.
    pub const TCP: u8 = ipv4::PROTO_TCP;
    /// UDP.
    pub const UDP: u8 = ipv4::PROTO_UDP;
    /// IPv6 in IP (IPv6-in-IPv6 and IPv6-in-IPv4 tunnels).
    pub const IPV6: u8 = crate::field::ipv6::NEXT_IPV6;
    /// ICMPv6.
    pub const ICMPV6: u8 = crate::field::ipv6::NEXT_ICMPV6;
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: u8 = crate::field::ipv6::NEXT_HOP_BY_HOP;
    /// IPv6 routing header.
    pub const ROUTING: u8 = crate::field::ipv6::NEXT_ROUTING;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = crate::field::ipv6::NEXT_FRAGMENT;
    /// IPv6 destination options.
    pub const DEST_OPTS: u8 = crate::field::ipv6::NEXT_DEST_OPTS;
}

/// ICMP message types and codes.
pub mod icmp_type {
    use crate::field::icmp;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = icmp::ECHO_REPLY;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = icmp::DEST_UNREACHABLE;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = icmp::ECHO_REQUEST;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = icmp::TIME_EXCEEDED;
    /// Destination unreachable code: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = icmp::CODE_FRAG_NEEDED;
    /// Time exceeded code: TTL exceeded in transit.
    pub const CODE_TTL_EXCEEDED: u8 = icmp::CODE_TTL_EXCEEDED;
}

/// ICMPv6 message types and codes (RFC 4443).
pub mod icmpv6_type {
    use crate::field::icmpv6;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = icmpv6::DEST_UNREACHABLE;
    /// Packet too big (the MTU in bytes 4..8).
    pub const PACKET_TOO_BIG: u8 = icmpv6::PACKET_TOO_BIG;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = icmpv6::TIME_EXCEEDED;
    /// Parameter problem (the pointer in bytes 4..8).
    pub const PARAM_PROBLEM: u8 = icmpv6::PARAM_PROBLEM;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = icmpv6::ECHO_REQUEST;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = icmpv6::ECHO_REPLY;
    /// Time exceeded code: hop limit exceeded in transit.
    pub const CODE_HOP_LIMIT_EXCEEDED: u8 = icmpv6::CODE_HOP_LIMIT_EXCEEDED;
}

// Big-endian accessors at fixed offsets. They index, so they panic out of bounds: the views'
// `new_checked` (or a fixed-size buffer) guarantees every offset they are given is in bounds.

#[inline(always)]
fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[inline(always)]
fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    let [a, b] = value.to_be_bytes();
    bytes[at] = a;
    bytes[at + 1] = b;
}

#[inline(always)]
fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    let [a, b, c, d] = value.to_be_bytes();
    bytes[at] = a;
    bytes[at + 1] = b;
    bytes[at + 2] = c;
    bytes[at + 3] = d;
}

/// Replaces the checksum word at `at` with `update(old)`.
#[inline(always)]
fn patch_u16(bytes: &mut [u8], at: usize, update: impl FnOnce(u16) -> u16) {
    let old = get_u16(bytes, at);
    put_u16(bytes, at, update(old));
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests6;
