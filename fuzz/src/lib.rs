//! Shared parts of xvs's fuzz targets (`fuzz_targets/`).
//!
//! - [`input`]: how a fuzz input is read: a small config, then frame records, each with a
//!   control byte that can repair lengths and checksums (so mutated IPv4 and IPv6 frames
//!   get past the checksum checks and reach the rewrites) and, in the sequence target, move time, reload
//!   the service table or switch workers.
//! - [`repair`]: the length and checksum repairs, with etherparse's checksum sums (never
//!   the code under test).
//! - [`lab`]: a director in memory built from the config: IPv4 and IPv6 virtual services
//!   with DR, NAT, TUN (also of the other family) and local real servers, two dual-stack
//!   links, neighbours, a connection table and its pipelines.
//! - [`oracle`]: what every frame the pipeline emits must be, checked by etherparse, and
//!   the counters every frame it does not emit must be found under.
//! - [`reference`]: what the parser must answer, worked out with etherparse.
//! - [`targets`]: the targets' bodies.
//! - [`seeds`]: real IPv4 and IPv6 frames (SYN, ACK, FIN, NAT replies, ICMP and ICMPv6
//!   errors quoting a flow, extension headers, fragments, truncated frames) for the committed seed corpus (`examples/seeds.rs`).

pub mod input;
pub mod lab;
pub mod oracle;
pub mod reference;
pub mod repair;
pub mod seeds;
pub mod targets;
