//! The one interface every algorithm implements.

use std::net::IpAddr;

use crate::server::RealServer;

/// What a scheduler may know of the packet that opens a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Client address (sh and mh hash it).
    pub src: IpAddr,
    /// Client port (sh-port and mh-port add it to the hash).
    pub src_port: u16,
    /// Destination address as the client sent it (dh, lblc and lblcr key on it).
    pub dst: IpAddr,
    /// Destination port.
    pub dst_port: u16,
    /// Milliseconds on the caller's monotonic clock; lblc and lblcr age their caches by it.
    pub now_ms: u64,
}

/// A scheduling algorithm for one virtual service, owned by one worker.
///
/// Each worker thread holds its own instance, so per-connection state (the rr position, the
/// wrr mark, lblc's cache, twos' random state) is never shared and never locked; with one
/// worker the picks follow IPVS's sequence exactly. Load that all workers must see
/// (ActiveConn, InActConn, OVERLOAD) lives in the shared [`crate::ServerLoad`].
///
/// `servers` is the service's real-server list in configuration order; it must be the slice
/// last passed to [`Scheduler::update`]. Returned indexes point into it.
pub trait Scheduler: Send {
    /// The ipvsadm name (`rr`, `wlc`, ...).
    fn name(&self) -> &'static str;

    /// Rebuilds derived state after servers were added, removed or edited (IPVS's
    /// `add_dest`/`del_dest`/`upd_dest`). Not on the per-packet path; may allocate.
    fn update(&mut self, servers: &[RealServer]);

    /// Picks the real server for a new connection, or `None` when no server may take one
    /// ("no destination available"). Allocates nothing.
    fn pick(&mut self, servers: &[RealServer], request: &Request) -> Option<usize>;

    /// Periodic housekeeping (lblc/lblcr cache expiry), called from the owning worker about
    /// once a second. Most algorithms have none.
    fn tick(&mut self, _servers: &[RealServer], _now_ms: u64) {}
}
