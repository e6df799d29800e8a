//! The values the table hands out and takes in: handles, connection snapshots, lookup
//! results, errors, and the description of a new connection.

use crate::dest::DestId;
use crate::key::{Endpoint, FlowKey, Protocol};
use crate::state::{ReturnPath, TcpState};
use crate::timeouts::Secs;

/// A handle to a connection or template: its shard, slot and the slot's generation, so a
/// handle outliving its entry fails cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// A copy of a connection as found by a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub flow: FlowRef,
    pub proto: Protocol,
    pub client: Endpoint,
    /// The virtual service address the client talks to.
    pub vip: Endpoint,
    /// The real server address packets are forwarded to.
    pub dest_addr: Endpoint,
    pub dest: DestId,
    pub state: TcpState,
    /// Counted in ActiveConn (else InActConn).
    pub active: bool,
    pub return_path: ReturnPath,
    /// Clock value at which the entry expires unless refreshed.
    pub expires: Secs,
    /// Controlled by a persistence template.
    pub persistent: bool,
}

/// A persistence template found or created for a client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    pub flow: FlowRef,
    pub dest: DestId,
    pub dest_addr: Endpoint,
    pub expires: Secs,
}

/// Result of an inbound lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    Hit(Conn),
    /// No connection: schedule the packet as a new one. Also returned after an
    /// `expire_nodest_conn` expiry.
    Miss,
    /// The connection's real server is gone and `expire_nodest_conn` is off: drop the packet
    /// silently and leave the timer alone (IPVS).
    Drop,
}

/// What the data path needs of a packet of a known flow, after its state update
/// ([`crate::Shard::track_inbound`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub flow: FlowRef,
    pub dest: DestId,
    /// Where the packet goes.
    pub dest_addr: Endpoint,
    /// The state after the packet.
    pub state: TcpState,
}

/// A connection found by [`crate::Shard::peek_inbound`], nothing changed yet: what the fast
/// path needs to decide, and what [`crate::Shard::touch`] needs to apply the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peeked {
    pub(crate) slot: u32,
    /// The entry's state word as read; `touch` applies the packet only if it is unchanged.
    pub(crate) word: u64,
    pub(crate) proto: Protocol,
    pub dest: DestId,
}

/// Result of [`crate::Shard::track_inbound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// A known flow, its state updated.
    Hit(Hit),
    /// Not in this shard (or just expired by `expire_nodest_conn`).
    Miss,
    /// Its real server is gone and `expire_nodest_conn` is off: drop the packet.
    Drop,
}

/// Why a connection or template was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The shard has no free slot; the flow is refused (counted).
    Full,
    /// A connection with this inbound key exists already.
    Exists,
    /// The template to attach to expired or was invalidated meanwhile; schedule again.
    TemplateGone,
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InsertError::Full => "connection table full",
            InsertError::Exists => "connection exists",
            InsertError::TemplateGone => "persistence template gone",
        })
    }
}

impl std::error::Error for InsertError {}

/// The handle no longer names a live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;

/// A new connection, as decided by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// The first packet's tuple: client -> virtual service.
    pub key: FlowKey,
    pub dest: DestId,
    pub dest_addr: Endpoint,
    pub return_path: ReturnPath,
    /// The persistence template that chose `dest`, if any.
    pub template: Option<TemplateRef>,
}

/// One entry as `ipvsadm -lc` shows it: a connection, or a persistence template (state
/// NONE, client port 0, protocol `None` for firewall-mark templates, whose `vip` address is
/// the mark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub flow: FlowRef,
    pub template: bool,
    pub proto: Option<Protocol>,
    pub client: Endpoint,
    pub vip: Endpoint,
    pub dest_addr: Endpoint,
    pub dest: DestId,
    pub state: TcpState,
    pub expires: Secs,
    /// Counted in ActiveConn (connections only).
    pub active: bool,
    /// No reply seen through the director (IPVS `IP_VS_CONN_F_NOOUTPUT`: DR, TUN).
    pub no_output: bool,
    /// Installed by connection sync, no packet of it seen on this director yet.
    pub synced: bool,
}
