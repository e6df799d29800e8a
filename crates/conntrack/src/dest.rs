//! The real server as the connection table sees it: an opaque handle, the counters it
//! reports, and the status it asks about.
//!
//! conntrack depends on no other xvs crate, so it does not own ActiveConn / InActConn /
//! PersistConn. It reports every change to the caller through [`DestCounters`], exactly once
//! per boundary crossing (creation, state change, expiry, removal); the dataplane maps these
//! onto the scheduler's per-real-server atomics.

/// Opaque handle of a real server (IPVS `struct ip_vs_dest`), chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Receives the connection counter changes of real servers.
///
/// The IPVS rules the table follows (ip_vs_conn.c `ip_vs_bind_dest` / `ip_vs_unbind_dest`,
/// ip_vs_proto_tcp.c `set_tcp_state`):
/// - a new connection is bound *inactive* (every dest's conn_flags carry INACTIVE), so it
///   starts in InActConn; its first TCP transition into an active state moves it;
/// - a template counts in PersistConn from creation to expiry.
pub trait DestCounters {
    /// A connection was bound to `dest` in the inactive state: InActConn += 1.
    fn conn_bound(&mut self, dest: DestId);
    /// The connection entered an active state: InActConn -= 1, ActiveConn += 1.
    fn conn_activated(&mut self, dest: DestId);
    /// The connection left the active states: ActiveConn -= 1, InActConn += 1.
    fn conn_deactivated(&mut self, dest: DestId);
    /// The connection is gone (expired, dropped for a removed dest): decrement ActiveConn if
    /// `was_active`, else InActConn.
    fn conn_released(&mut self, dest: DestId, was_active: bool);
    /// A persistence template was bound to `dest`: PersistConn += 1.
    fn template_bound(&mut self, dest: DestId);
    /// A persistence template is gone: PersistConn -= 1.
    fn template_released(&mut self, dest: DestId);
}

/// What the table needs to know about a real server on lookups: is it still in the service
/// (IPVS `IP_VS_DEST_F_AVAILABLE`), and is it quiesced (weight 0)?
pub trait DestStatus {
    fn is_available(&self, dest: DestId) -> bool;
    fn is_quiescent(&self, dest: DestId) -> bool;
}

/// A [`DestCounters`] that ignores everything (for callers that keep no counters).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCounters;

impl DestCounters for NoCounters {
    fn conn_bound(&mut self, _: DestId) {}
    fn conn_activated(&mut self, _: DestId) {}
    fn conn_deactivated(&mut self, _: DestId) {}
    fn conn_released(&mut self, _: DestId, _: bool) {}
    fn template_bound(&mut self, _: DestId) {}
    fn template_released(&mut self, _: DestId) {}
}

/// A [`DestStatus`] in which every real server is available and weighted.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllAvailable;

impl DestStatus for AllAvailable {
    fn is_available(&self, _: DestId) -> bool {
        true
    }
    fn is_quiescent(&self, _: DestId) -> bool {
        false
    }
}
