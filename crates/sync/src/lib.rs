//! # xvs-sync
//!
//! The bytes two directors exchange to share their connection tables, and nothing else (no
//! sockets, no threads: those are the dataplane's sync side thread).
//!
//! - [`wire`]: IPVS's sync protocol version 1 (`net/netfilter/ipvs/ip_vs_sync.c`), byte for
//!   byte: the 8-byte `ip_vs_sync_mesg` header, 36-byte `ip_vs_sync_v4` and 72-byte
//!   `ip_vs_sync_v6` entries, the optional parameters padded to 32 bits. An xvs backup follows
//!   a kernel IPVS master and the reverse.
//! - [`ext`]: xvs's own messages, off by default: a backup's request for the whole table
//!   (bulk resync, which IPVS lacks) and the master's end-of-stream marker. They carry a
//!   `size` of 0, so a kernel IPVS backup drops them as "bogus message size".
//! - [`auth`]: an optional HMAC-SHA256 trailer with a sender id and a time-based counter, so
//!   a backup with the shared key refuses forged and replayed messages.

pub mod auth;
pub mod ext;
pub mod wire;

pub use wire::{DecodeError, EntryError, MessageWriter, SyncConn, decode};

/// IPVS's default multicast group (`IP_VS_SYNC_GROUP`, 224.0.0.81).
pub const DEFAULT_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 81);
/// IPVS's default port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;
/// IPVS's default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;
/// IPVS's default message size: an Ethernet MTU less the IPv4 and UDP headers.
pub const DEFAULT_MAXLEN: u16 = 1500 - 20 - 8;
