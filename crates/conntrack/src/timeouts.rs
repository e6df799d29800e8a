//! Per-state timeouts, changeable at run time (`ipvsadm --set tcp tcpfin udp`).
//!
//! Every packet restarts a connection's timer with the timeout of the state it is in after the
//! packet (IPVS `ip_vs_conn_put` after `set_tcp_state`). The values are shared by all shards
//! and read on every state update, so they are relaxed atomics: a `--set` takes effect from
//! the next packet of each connection, as in IPVS.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::key::Protocol;
use crate::state::TcpState;

/// Seconds of a caller-supplied monotonic clock. The table never reads the system clock.
pub type Secs = u32;

/// IPVS `tcp_timeouts`, in seconds, indexed by [`TcpState`].
pub const DEFAULT_TCP_TIMEOUTS: [Secs; TcpState::COUNT] = [
    2,       // NONE
    15 * 60, // ESTABLISHED
    2 * 60,  // SYN_SENT
    60,      // SYN_RECV
    2 * 60,  // FIN_WAIT
    2 * 60,  // TIME_WAIT
    10,      // CLOSE
    60,      // CLOSE_WAIT
    30,      // LAST_ACK
    2 * 60,  // LISTEN
    120,     // SYNACK
];

/// IPVS `udp_timeouts[IP_VS_UDP_S_NORMAL]`.
pub const DEFAULT_UDP_TIMEOUT: Secs = 5 * 60;

/// ICMP echo flows are an xvs addition (IPVS only relays ICMP errors); one minute.
pub const DEFAULT_ICMP_TIMEOUT: Secs = 60;

/// IPVS `ip_vs_conn_new` gives a fresh entry 3 s until its first state transition.
pub const NEW_CONN_TIMEOUT: Secs = 3;

/// IPVS `-p` without a value.
pub const DEFAULT_PERSISTENCE_TIMEOUT: Secs = 300;

/// IPVS `ip_vs_conn_expire`: a template that still controls connections is re-armed for 60 s.
pub const TEMPLATE_BUSY_RETRY: Secs = 60;

/// The live timeout table.
#[derive(Debug)]
pub struct Timeouts {
    tcp: [AtomicU32; TcpState::COUNT],
    udp: AtomicU32,
    icmp: AtomicU32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: DEFAULT_TCP_TIMEOUTS.map(AtomicU32::new),
            udp: AtomicU32::new(DEFAULT_UDP_TIMEOUT),
            icmp: AtomicU32::new(DEFAULT_ICMP_TIMEOUT),
        }
    }
}

/// The three values of `ipvsadm --set` (and `-L --timeout`): the model's, under the name
/// that tells it apart from the live table here.
pub use xvs_model::Timeouts as SetTimeouts;

impl Timeouts {
    /// The timeout for an entry of `proto` in `state`.
    #[inline]
    pub fn for_state(&self, proto: Protocol, state: TcpState) -> Secs {
        match proto {
            Protocol::Tcp => self.tcp[state as usize].load(Ordering::Relaxed),
            Protocol::Udp => self.udp.load(Ordering::Relaxed),
            Protocol::Icmp => self.icmp.load(Ordering::Relaxed),
        }
    }

    /// `ipvsadm --set tcp tcpfin udp`: ESTABLISHED, FIN_WAIT and UDP timeouts. As in IPVS
    /// (`ip_vs_set_timeout`), a 0 keeps the current value.
    pub fn set(&self, values: SetTimeouts) {
        if values.tcp != 0 {
            self.tcp[TcpState::Established as usize].store(values.tcp, Ordering::Relaxed);
        }
        if values.tcpfin != 0 {
            self.tcp[TcpState::FinWait as usize].store(values.tcpfin, Ordering::Relaxed);
        }
        if values.udp != 0 {
            self.udp.store(values.udp, Ordering::Relaxed);
        }
    }

    /// The values `ipvsadm -L --timeout` prints.
    pub fn get(&self) -> SetTimeouts {
        SetTimeouts {
            tcp: self.tcp[TcpState::Established as usize].load(Ordering::Relaxed),
            tcpfin: self.tcp[TcpState::FinWait as usize].load(Ordering::Relaxed),
            udp: self.udp.load(Ordering::Relaxed),
        }
    }

    /// Sets one TCP state's timeout (beyond what `--set` can reach, e.g. for tests or sysctl
    /// style configuration).
    pub fn set_tcp_state(&self, state: TcpState, secs: Secs) {
        self.tcp[state as usize].store(secs, Ordering::Relaxed);
    }

    pub fn set_icmp(&self, secs: Secs) {
        self.icmp.store(secs, Ordering::Relaxed);
    }
}
