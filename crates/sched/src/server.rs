//! The real-server view every scheduler sees.
//!
//! A [`RealServer`] is one entry of a virtual service's server list as the control plane
//! configured it (address, weight, thresholds). Its [`ServerLoad`] holds what changes per
//! connection (ActiveConn, InActConn, PersistConn, the OVERLOAD flag) and what health checks
//! flip (availability). The load lives behind an `Arc` so it survives the rebuild of a
//! service-table snapshot: a reload or `xvsadm -e` makes new `RealServer`s that share the
//! old counters, as IPVS keeps its `ip_vs_dest` across edits.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::MAX_WEIGHT;

/// Connection counters and flags of one real server, shared by all workers.
///
/// Counters are plain relaxed atomics: schedulers read them as a hint of load, like IPVS reads
/// `atomic_t activeconns` without a lock, so a momentarily stale value is acceptable.
#[derive(Debug)]
pub struct ServerLoad {
    active: AtomicU32,
    inactive: AtomicU32,
    persistent: AtomicU32,
    overloaded: AtomicBool,
    available: AtomicBool,
}

impl Default for ServerLoad {
    fn default() -> Self {
        ServerLoad {
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            persistent: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            available: AtomicBool::new(true),
        }
    }
}

impl ServerLoad {
    /// ActiveConn: connections in ESTABLISHED, SYN_SENT, SYN_RECV or SYNACK.
    #[inline]
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// InActConn: every other connection state, and UDP/ICMP entries.
    #[inline]
    pub fn inactive(&self) -> u32 {
        self.inactive.load(Ordering::Relaxed)
    }

    /// PersistConn: persistence templates that point at this server.
    #[inline]
    pub fn persistent(&self) -> u32 {
        self.persistent.load(Ordering::Relaxed)
    }

    /// IPVS's OVERLOAD flag, set and cleared by the -x/-y thresholds.
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// False when health checks took the server out; it then gets no new connections.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Health checks call this; existing connections are not touched.
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Relaxed);
    }

    /// Forces the OVERLOAD flag. Tests and the sync daemon use it; the data path goes
    /// through [`RealServer::bind`] and [`RealServer::unbind`], which apply the thresholds.
    pub fn set_overloaded(&self, overloaded: bool) {
        self.overloaded.store(overloaded, Ordering::Relaxed);
    }

    /// A connection crossed from an inactive to an active state (for example SYN_RECV after
    /// NONE, or ESTABLISHED after CLOSE_WAIT was left by a new SYN).
    #[inline]
    pub fn conn_activated(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        decrement(&self.inactive);
    }

    /// A connection crossed from an active to an inactive state (FIN_WAIT, TIME_WAIT, ...).
    #[inline]
    pub fn conn_deactivated(&self) {
        decrement(&self.active);
        self.inactive.fetch_add(1, Ordering::Relaxed);
    }

    /// `ip_vs_dest_totalconns`: what the thresholds compare against (templates excluded).
    #[inline]
    pub fn total_conns(&self) -> u32 {
        self.active().saturating_add(self.inactive())
    }

    /// `ip_vs_dest_conn_overhead`: an active connection costs 256 inactive ones, because an
    /// inactive entry (TIME_WAIT, a UDP flow past its traffic) uses little of the server.
    #[inline]
    pub fn overhead(&self) -> u64 {
        ((self.active() as u64) << 8) + self.inactive() as u64
    }
}

/// Counters never wrap below zero even if a caller reports an unbind twice.
#[inline]
fn decrement(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

/// What a new connection-table entry counts as on its real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A connection in an active state (ActiveConn).
    Active,
    /// A connection in an inactive state, or a UDP/ICMP entry (InActConn).
    Inactive,
    /// A persistence template (PersistConn); templates do not count against thresholds.
    Template,
}

/// One real server of a virtual service, as the schedulers see it.
#[derive(Debug, Clone)]
pub struct RealServer {
    /// Real server address (`-r`).
    pub addr: IpAddr,
    /// Real server port; for DR and TUN it equals the virtual port.
    pub port: u16,
    /// `-w`: 0 quiesces the server (no new connections, existing ones continue).
    pub weight: u32,
    /// The weight before the server was quiesced. Consistent hashing (mh) places servers by
    /// it, so quiescing and un-quiescing a server moves no other server's clients.
    pub last_weight: u32,
    /// `-x`: past this many connections the server is OVERLOADED; 0 means no limit.
    pub upper_threshold: u32,
    /// `-y`: an overloaded server is usable again below this many; 0 means 3/4 of `-x`.
    pub lower_threshold: u32,
    /// Counters shared with the connection table and the other workers.
    pub load: Arc<ServerLoad>,
}

impl RealServer {
    /// A server with fresh counters and no thresholds. Weights above 65535 are clamped.
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        let weight = weight.min(MAX_WEIGHT);
        RealServer {
            addr,
            port,
            weight,
            last_weight: weight,
            upper_threshold: 0,
            lower_threshold: 0,
            load: Arc::new(ServerLoad::default()),
        }
    }

    /// Sets `-x` and `-y`.
    pub fn with_thresholds(mut self, upper: u32, lower: u32) -> Self {
        self.upper_threshold = upper;
        self.lower_threshold = lower;
        self
    }

    /// The same server with a new weight (`ipvsadm -e -w`), keeping its counters and, when
    /// quiesced, the weight it had before.
    pub fn with_weight(&self, weight: u32) -> Self {
        let weight = weight.min(MAX_WEIGHT);
        let mut edited = self.clone();
        edited.weight = weight;
        if weight > 0 {
            edited.last_weight = weight;
        }
        edited
    }

    /// Whether a scheduler may give this server a new connection: weight above zero (weight 0
    /// means quiesced), not OVERLOADED by its thresholds, and not taken out by health checks.
    #[inline]
    pub fn accepts_new(&self) -> bool {
        self.weight > 0 && !self.load.is_overloaded() && self.load.is_available()
    }

    /// `ip_vs_bind_dest`: count a new entry and raise OVERLOAD when the total reaches `-x`.
    pub fn bind(&self, kind: ConnKind) {
        let load = &*self.load;
        match kind {
            ConnKind::Template => {
                load.persistent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            ConnKind::Active => load.active.fetch_add(1, Ordering::Relaxed),
            ConnKind::Inactive => load.inactive.fetch_add(1, Ordering::Relaxed),
        };
        if self.upper_threshold != 0 && load.total_conns() >= self.upper_threshold {
            load.overloaded.store(true, Ordering::Relaxed);
        }
    }

    /// `ip_vs_unbind_dest`: uncount an entry and clear OVERLOAD by IPVS's rule: below `-y`
    /// when it is set, else below 3/4 of `-x`, else (no thresholds at all) at once.
    pub fn unbind(&self, kind: ConnKind) {
        let load = &*self.load;
        match kind {
            ConnKind::Template => {
                decrement(&load.persistent);
                return;
            }
            ConnKind::Active => decrement(&load.active),
            ConnKind::Inactive => decrement(&load.inactive),
        }
        let total = load.total_conns() as u64;
        let clear = if self.lower_threshold != 0 {
            total < self.lower_threshold as u64
        } else if self.upper_threshold != 0 {
            total * 4 < self.upper_threshold as u64 * 3
        } else {
            true
        };
        if clear {
            load.overloaded.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn server(weight: u32) -> RealServer {
        RealServer::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80, weight)
    }

    #[test]
    fn overhead_weighs_active_256_times_inactive() {
        let s = server(1);
        s.bind(ConnKind::Active);
        s.bind(ConnKind::Inactive);
        s.bind(ConnKind::Inactive);
        assert_eq!(s.load.overhead(), 256 + 2);
    }

    #[test]
    fn upper_threshold_alone_reenters_below_three_quarters() {
        let s = server(1).with_thresholds(8, 0);
        for _ in 0..7 {
            s.bind(ConnKind::Active);
        }
        assert!(s.accepts_new());
        s.bind(ConnKind::Active); // 8 >= 8
        assert!(!s.accepts_new());
        s.unbind(ConnKind::Active); // 7: 28 < 24? no
        assert!(!s.accepts_new());
        s.unbind(ConnKind::Active); // 6: 24 < 24? no
        assert!(!s.accepts_new());
        s.unbind(ConnKind::Active); // 5: 20 < 24
        assert!(s.accepts_new());
    }

    #[test]
    fn lower_threshold_governs_reentry_when_set() {
        let s = server(1).with_thresholds(4, 2);
        for _ in 0..4 {
            s.bind(ConnKind::Inactive);
        }
        assert!(s.load.is_overloaded());
        s.unbind(ConnKind::Inactive); // 3
        s.unbind(ConnKind::Inactive); // 2, not < 2
        assert!(s.load.is_overloaded());
        s.unbind(ConnKind::Inactive); // 1
        assert!(!s.load.is_overloaded());
    }

    #[test]
    fn templates_count_as_persistent_and_not_against_thresholds() {
        let s = server(1).with_thresholds(1, 0);
        s.bind(ConnKind::Template);
        assert_eq!(s.load.persistent(), 1);
        assert!(!s.load.is_overloaded());
        s.unbind(ConnKind::Template);
        assert_eq!(s.load.persistent(), 0);
    }

    #[test]
    fn state_crossings_move_one_connection_between_counters() {
        let s = server(1);
        s.bind(ConnKind::Inactive);
        s.load.conn_activated();
        assert_eq!((s.load.active(), s.load.inactive()), (1, 0));
        s.load.conn_deactivated();
        assert_eq!((s.load.active(), s.load.inactive()), (0, 1));
        s.unbind(ConnKind::Inactive);
        s.unbind(ConnKind::Inactive); // a duplicate report must not wrap
        assert_eq!(s.load.inactive(), 0);
    }

    #[test]
    fn quiescing_keeps_last_weight_and_counters() {
        let s = server(5);
        s.bind(ConnKind::Active);
        let q = s.with_weight(0);
        assert_eq!((q.weight, q.last_weight), (0, 5));
        assert!(!q.accepts_new());
        assert_eq!(q.load.active(), 1);
        let back = q.with_weight(7);
        assert_eq!((back.weight, back.last_weight), (7, 7));
        assert_eq!(server(70_000).weight, MAX_WEIGHT);
    }

    #[test]
    fn unavailable_servers_take_no_new_connections() {
        let s = server(3);
        s.load.set_available(false);
        assert!(!s.accepts_new());
        s.load.set_available(true);
        assert!(s.accepts_new());
    }
}
