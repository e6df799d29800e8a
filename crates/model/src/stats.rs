//! Traffic counters and rates, as the dataplane rolls them up and the CLI lists them.
//!
//! One definition for both sides: the dataplane's statistics thread fills them, the control
//! protocol carries them (serde, under the key names of IPVS's `ip_vs_stats_user`, which
//! `--json` has always printed), and `xvsadm` renders them.

use serde::{Deserialize, Serialize};

/// Packet and byte counters since creation or the last `-Z`: ipvsadm's `--stats` columns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client -> real server.
    #[serde(rename = "inpkts")]
    pub in_pkts: u64,
    /// Packets real server -> client (NAT only).
    #[serde(rename = "outpkts")]
    pub out_pkts: u64,
    /// Bytes client -> real server.
    #[serde(rename = "inbytes")]
    pub in_bytes: u64,
    /// Bytes real server -> client (NAT only).
    #[serde(rename = "outbytes")]
    pub out_bytes: u64,
}

impl Stats {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Stats) {
        self.conns += other.conns;
        self.in_pkts += other.in_pkts;
        self.out_pkts += other.out_pkts;
        self.in_bytes += other.in_bytes;
        self.out_bytes += other.out_bytes;
    }

    /// The change since `earlier` (wrapping, as the counters they were read from do).
    pub fn minus(&self, earlier: &Stats) -> Stats {
        Stats {
            conns: self.conns.wrapping_sub(earlier.conns),
            in_pkts: self.in_pkts.wrapping_sub(earlier.in_pkts),
            out_pkts: self.out_pkts.wrapping_sub(earlier.out_pkts),
            in_bytes: self.in_bytes.wrapping_sub(earlier.in_bytes),
            out_bytes: self.out_bytes.wrapping_sub(earlier.out_bytes),
        }
    }
}

/// Per-second rates from the estimator: ipvsadm's `--rate` columns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    #[serde(rename = "inpps")]
    pub in_pps: u64,
    /// Packets per second out.
    #[serde(rename = "outpps")]
    pub out_pps: u64,
    /// Bytes per second in.
    #[serde(rename = "inbps")]
    pub in_bps: u64,
    /// Bytes per second out.
    #[serde(rename = "outbps")]
    pub out_bps: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_subtracts_wrapping() {
        let mut a = Stats {
            conns: 1,
            in_pkts: 2,
            out_pkts: 3,
            in_bytes: 4,
            out_bytes: 5,
        };
        a.add(&a.clone());
        assert_eq!(a.in_bytes, 8);
        let wrapped = Stats { conns: 0, ..a }.minus(&Stats { conns: 1, ..a });
        assert_eq!(wrapped.conns, u64::MAX);
        assert_eq!(wrapped.out_bytes, 0);
    }
}
