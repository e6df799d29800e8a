//! The xvs connection table: IPVS's connection memory, sharded per worker.
//!
//! The director remembers every flow so that each packet of a connection reaches the same
//! real server. This crate is that memory, with IPVS's semantics:
//! - [`key`]: flow keys for TCP, UDP and ICMP over IPv4 and IPv6; virtual services by
//!   (protocol, VIP, port) or firewall mark;
//! - [`state`]: IPVS's TCP transition tables (INPUT / OUTPUT / INPUT-ONLY) and the
//!   active/inactive split;
//! - [`timeouts`]: per-state timeouts and `ipvsadm --set`;
//! - [`template`]: persistence templates keyed by the masked client address;
//! - [`dest`]: the real server as an opaque [`DestId`], and how counter changes are reported;
//! - [`table`]: the sharded table as every worker sees it, with its concurrency design and
//!   full-table policy; [`shard`]: the owner's half (create, remove, expire);
//! - [`conn`]: the values lookups return and inserts take.
//!
//! How the dataplane uses it, per worker:
//! ```
//! use xvs_conntrack::*;
//! # let mut counters = NoCounters;
//! let (table, mut shards) = ConnTable::new(Config::new(2, 1024));
//! let shard = &mut shards[0];
//! let now = 1000; // the worker's monotonic seconds
//! let client = Endpoint::new([10, 0, 0, 1], 40000);
//! let vip = Endpoint::new([192, 0, 2, 1], 80);
//! let rs = Endpoint::new([10, 1, 0, 5], 8080);
//! let key = FlowKey::tcp(client, vip);
//! let conn = match shard.lookup_inbound(&key, &AllAvailable, &mut counters) {
//!     Inbound::Hit(conn) => conn,
//!     Inbound::Miss => {
//!         // the scheduler picked DestId(5) at `rs`; NAT, so replies come back through us
//!         let new = NewConn { key, dest: DestId(5), dest_addr: rs,
//!                             return_path: ReturnPath::ViaDirector, template: None };
//!         shard.insert(new, now, &mut counters).unwrap()
//!     }
//!     Inbound::Drop => return,
//! };
//! shard.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, now, &mut counters).unwrap();
//! // Any worker: the real server's reply finds the connection without a lock.
//! let reply = FlowKey::tcp(rs, client);
//! let back = table.lookup_outbound(&reply).unwrap();
//! assert_eq!(back.vip, vip);
//! table.on_packet(back.flow, Direction::Output, TcpFlags::SYN_ACK, now, &mut counters).unwrap();
//! // Regularly, on the owning worker (or the side thread that owns the shard):
//! shard.expire(now + 1, &mut counters);
//! ```

pub mod conn;
pub mod defense;
pub mod dest;
mod entry;
mod hash;
mod index;
pub mod key;
mod memory;
pub mod shard;
pub mod state;
pub mod sync;
pub mod table;
pub mod template;
pub mod timeouts;
mod wheel;

pub use conn::{
    Conn, FlowRef, Gone, Hit, Inbound, InsertError, Listed, NewConn, Peeked, TemplateRef, Tracked,
};
pub use defense::{Defense, DefenseMode, DefenseStatus};
pub use dest::{AllAvailable, DestCounters, DestId, DestStatus, NoCounters};
pub use key::{Addr, Endpoint, Family, FlowKey, Protocol, ServiceKey};
pub use shard::Shard;
pub use state::{Direction, ReturnPath, TableSet, TcpFlags, TcpState};
pub use sync::SyncPolicy;
pub use table::{Config, ConnTable, Options, ShardStats, memory_when_full};
pub use template::{Persistence, PersistenceMask, TemplateKey};
pub use timeouts::{Secs, SetTimeouts, Timeouts};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_move_to_workers_and_the_table_is_shared() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Shard>();
        send_sync::<ConnTable>();
        send_sync::<Conn>();
    }
}
