//! The connection timeouts an operator sets: `ipvsadm --set tcp tcpfin udp`, `-L --timeout`.
//!
//! The connection table holds the live per-state values (xvs-conntrack's `Timeouts`); this is
//! the three numbers that configure them, as the config file, the control protocol and the
//! listing carry them.

use serde::{Deserialize, Serialize};

/// `--set tcp tcpfin udp` / `--timeout`, seconds. In a `--set`, 0 keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// ESTABLISHED TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcpfin: u32,
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    /// IPVS's defaults: 900 120 300.
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        }
    }
}
