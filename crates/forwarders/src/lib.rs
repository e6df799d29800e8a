//! In-place packet rewriting for the three IPVS forwarding methods, on AF_XDP frames.
//!
//! | method | IPVS | what changes |
//! |---|---|---|
//! | DR (`-g`) | `ip_vs_dr_xmit` | Ethernet addresses only ([`dr`]) |
//! | NAT (`-m`) | `ip_vs_nat_xmit`, `handle_response` | destination in, source out, TTL, checksums ([`nat`]) |
//! | TUN (`-i`) | `ip_vs_tunnel_xmit` | an outer IPv4 header in the headroom ([`tun`]) |
//!
//! Per packet the dataplane [`parse`]s the frame once into a [`PacketView`] (a `Copy` value:
//! offsets plus addresses, ports, TCP flags, TTL, DF), classifies and looks up the connection
//! with it, then calls one rewrite. Each rewrite returns the [`Transmit`] to perform (forward,
//! or an ICMP error the director sends back to the sender) or a [`Reason`] to count:
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use xvs_forwarders::{Egress, Frame, Reason, Transmit, nat, parse};
//!
//! // A UMEM chunk: 256 bytes of headroom, then the frame the NIC delivered.
//! let mut chunk = vec![0u8; 2048];
//! let syn = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .ipv4([203, 0, 113, 7], [192, 0, 2, 10], 64)
//!     .tcp(40000, 80, 1, 1024)
//!     .syn();
//! let len = syn.size(0);
//! syn.write(&mut &mut chunk[256..], &[]).unwrap();
//!
//! let mut refused = [0u64; Reason::COUNT];
//! let real_server = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 21), 8080);
//! let egress = Egress { src_mac: [2, 0, 0, 0, 0, 3], dst_mac: [2, 0, 0, 0, 0, 4], mtu: 1500 };
//!
//! let mut frame = Frame::new(&mut chunk, 256, len).unwrap();
//! let sent = parse(&frame).and_then(|view| {
//!     // ... classify (view.protocol(), view.dst, view.ports()) and look up the connection ...
//!     nat::rewrite_inbound(&mut frame, &view, real_server, &egress)
//! });
//! match sent {
//!     Ok(Transmit::Forward) => { /* put frame.start()..frame.len() on the TX ring */ }
//!     Ok(_) => { /* an ICMP error for the sender: TX it back out of the ingress port */ }
//!     Err(reason) => refused[reason as usize] += 1,
//! }
//! assert_eq!(sent, Ok(Transmit::Forward));
//! assert_eq!(&frame.data()[30..34], &[10, 1, 0, 21]);
//! ```
//!
//! ICMP errors about a connection go through [`icmp::parse_error`] (the quoted flow, for the
//! lookup) and then [`icmp`]'s NAT rewrites or its TUN answer; DR and TUN forward them with
//! their usual rewrite. Fragments are refused: [`fragments`] explains why. Frames need
//! [`RECOMMENDED_HEADROOM`] bytes of headroom for TUN and ICMP replies to avoid moving bytes.
//!
//! **IPv6** sits alongside, leaving every IPv4 function as it was: [`parse6`] gives a
//! [`PacketView6`] (extension headers walked by [`wire::walk_extension_headers`], at most
//! [`wire::MAX_EXTENSION_HEADERS`]; fragments refused by the IPv4 policy), and the rewrites
//! have `_v6` siblings: [`dr::forward_v6`], [`nat::rewrite_inbound_v6`] /
//! [`nat::rewrite_outbound_v6`], [`tun::encapsulate_6in6`], plus the mixed-family tunnels
//! IPVS allows, [`tun::encapsulate_4in6`] and [`tun::encapsulate_6in4`]. Oversized packets
//! are answered with an ICMPv6 Packet Too Big (reported as
//! `Transmit::FragmentationNeededToSender`), expired hop limits with Time Exceeded; ICMPv6
//! errors about a NAT connection go through [`icmp6`]. IPv6 rewrites want
//! [`RECOMMENDED_HEADROOM_V6`] bytes of headroom.
//!
//! Headers are read and written through [`wire`]: smoltcp-style views
//! (`Ipv4Packet<T: AsRef<[u8]>>` and its Ethernet, TCP, UDP and ICMP siblings) whose
//! checked constructors refuse short buffers and whose setters keep checksums right, in full
//! (`fill_checksum`) or incrementally (`decrement_ttl`, `set_dst_addr_patching`, ...). The
//! generator (xvs-pktgen) and the lab's IPIP decapsulator build and check frames with the same
//! views, so header offsets and the checksum arithmetic exist once.
//!
//! Everything is a pure function of the frame and the parameters: no allocation, no locks,
//! no `unsafe`, and no panic on any input (the proptests feed random and mutated frames and
//! forged views to every entry point).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
pub mod dr;
mod edit;
mod egress;
mod field;
pub mod fragments;
mod frame;
pub mod icmp;
pub mod icmp6;
pub mod nat;
mod parse;
mod parse6;
mod reason;
mod reply;
mod reply6;
pub mod tun;
pub mod wire;

pub use egress::{Egress, Transmit};
pub use frame::{Frame, RECOMMENDED_HEADROOM};
pub use parse::{L4, PacketView, TcpFlags, parse, parse_bytes, parse_common};
pub use parse6::{PacketView6, parse_common6, parse6, parse6_bytes};
pub use reason::Reason;
pub use reply6::RECOMMENDED_HEADROOM_V6;
