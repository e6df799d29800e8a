//! In-place packet rewriting for the three IPVS forwarding methods, on AF_XDP frames.
//!
//! The dataplane calls, per packet:
//!
//! ```text
//! let view = parse(&frame)?;                       // validate once, compact Copy view
//! // classify (proto, dst, dst port) + conntrack on the view ...
//! dr::forward(&mut frame, &view, &egress)?;        // DR:  MACs only
//! nat::rewrite_inbound(&mut frame, &view, rip_rport, &egress)?;   // NAT in: dst -> RS
//! nat::rewrite_outbound(&mut frame, &view, vip_vport, &egress)?;  // NAT out: src -> VIP
//! tun::encapsulate(&mut frame, &view, &tunnel, &egress)?;         // TUN: IPIP in headroom
//! ```
//!
//! Each rewrite returns the [`Transmit`] to perform (forward, or an ICMP error the director
//! sends back to the sender) or a [`Reason`] to count. ICMP errors about a connection go
//! through [`icmp::parse_error`] and then the NAT rewrites of [`icmp`] (DR and TUN forward them
//! unchanged). Fragments are refused; [`fragments`] explains why.
//!
//! Everything is a pure function of the frame and the parameters: no allocation, no locks,
//! no panics on any input, no `unsafe`.

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
pub mod nat;
mod parse;
mod reason;
mod reply;
pub mod tun;

pub use egress::{Egress, Transmit};
pub use frame::{Frame, RECOMMENDED_HEADROOM};
pub use parse::{L4, PacketView, TcpFlags, parse, parse_bytes};
pub use reason::Reason;
