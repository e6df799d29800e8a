//! # xvs-pktgen
//!
//! xvs's own packet generator, so xvs can show its speed with its own tools:
//!
//! - [`pattern`] and [`frame`]: the traffic (N flows over client addresses and ports;
//!   established, new-connection and UDP modes; 64 to 1518-byte frames and IMIX; send times
//!   in the payload) as frames with correct checksums;
//! - [`memory`]: the same patterns fed to xvs's pipeline in memory, for criterion and for
//!   exact per-packet instruction counts;
//! - [`report`]: rates, loss and latency percentiles, live lines and the final summary;
//! - [`wire`]: sending and receiving over AF_XDP (xvs's own frame I/O);
//! - [`tcp`]: connections per second with real TCP;
//! - [`compare`]: xvs against the kernel's nftables DNAT in the lab topology.

pub mod compare;
pub mod frame;
pub mod memory;
pub mod pattern;
pub mod report;
pub mod tcp;
pub mod wire;
