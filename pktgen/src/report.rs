//! What the generator reports: per-second lines while it runs and a summary at the end.
//!
//! Rates: Mpps, and Gbit/s counting frames as on the wire at layer 2 (FCS included,
//! preamble and inter-frame gap not). Loss is sent minus received, when this run also
//! received. Latency is the receive time minus the send time carried in the payload, both
//! `CLOCK_MONOTONIC` on this machine (namespaces share it), recorded in an HDR histogram in
//! nanoseconds with 3 significant digits.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::frame::FCS_LEN;

/// Packet and byte counts (bytes as frame lengths without FCS, as the sockets see them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Counts {
    /// Counts one frame of `len` bytes.
    #[inline]
    pub fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// Million packets per second over `elapsed`.
    pub fn mpps(&self, elapsed: Duration) -> f64 {
        per_second(self.packets as f64, elapsed) / 1e6
    }

    /// Gbit/s at layer 2 over `elapsed` (FCS added back to every frame).
    pub fn gbps(&self, elapsed: Duration) -> f64 {
        let wire_bytes = self.bytes + self.packets * FCS_LEN as u64;
        per_second(wire_bytes as f64 * 8.0, elapsed) / 1e9
    }
}

fn per_second(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// Packets sent but not received, and their share of those sent (0 when nothing was sent;
/// never negative).
pub fn loss(sent: u64, received: u64) -> (u64, f64) {
    let lost = sent.saturating_sub(received);
    let percent = if sent == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / sent as f64
    };
    (lost, percent)
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            // 1 ns to 100 s, 3 significant digits: the histogram never refuses a value.
            histogram: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl LatencyRecorder {
    /// Records one packet sent at `sent_ns` and received at `now_ns`.
    #[inline]
    pub fn record(&mut self, sent_ns: u64, now_ns: u64) {
        let ns = now_ns.saturating_sub(sent_ns).clamp(1, 100_000_000_000);
        self.histogram.saturating_record(ns);
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        let _ = self.histogram.add(&other.histogram);
    }

    /// The percentiles, or `None` without samples.
    pub fn summary(&self) -> Option<Latency> {
        let h = &self.histogram;
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Packets measured.
    pub samples: u64,
    /// Smallest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The final report of a run (`--json` prints it as is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// What was sent: mode, frame size, flows.
    pub traffic: String,
    /// AF_XDP bind mode of the sockets (copy or zero-copy).
    pub xdp_mode: String,
    /// Length of the run in seconds.
    pub seconds: f64,
    /// Sent.
    pub tx: Counts,
    /// Received (at the listening interfaces).
    pub rx: Counts,
    /// Sent, million packets per second.
    pub tx_mpps: f64,
    /// Received, million packets per second.
    pub rx_mpps: f64,
    /// Sent, Gbit/s.
    pub tx_gbps: f64,
    /// Received, Gbit/s.
    pub rx_gbps: f64,
    /// Times the TX ring (or the frame memory) was full: back-pressure, the frames waited
    /// and went later (none is skipped).
    pub tx_ring_full: u64,
    /// Frames the receiving kernel dropped for us (ring full, no fill frame).
    pub rx_dropped: u64,
    /// Sent minus received (only when this run also listened).
    pub lost: Option<u64>,
    /// `lost` as a percentage of sent.
    pub loss_percent: Option<f64>,
    /// One-way latency from send to receive (only when listening and frames had room).
    pub latency: Option<Latency>,
    /// Packets received per listening interface (per real server).
    pub per_interface: BTreeMap<String, u64>,
}

impl Summary {
    /// Fills the rates and loss from the counts.
    pub fn finish(&mut self, elapsed: Duration, listened: bool) {
        self.seconds = elapsed.as_secs_f64();
        self.tx_mpps = self.tx.mpps(elapsed);
        self.rx_mpps = self.rx.mpps(elapsed);
        self.tx_gbps = self.tx.gbps(elapsed);
        self.rx_gbps = self.rx.gbps(elapsed);
        if listened && self.tx.packets > 0 {
            let (lost, percent) = loss(self.tx.packets, self.rx.packets);
            self.lost = Some(lost);
            self.loss_percent = Some(percent);
        }
    }

    /// The summary as text, for people.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} over {:.2} s ({} AF_XDP)\n",
            self.traffic, self.seconds, self.xdp_mode
        );
        s += &format!(
            "  TX {:>12} packets  {:8.3} Mpps  {:7.3} Gbit/s  (TX ring full {} times)\n",
            self.tx.packets, self.tx_mpps, self.tx_gbps, self.tx_ring_full
        );
        s += &format!(
            "  RX {:>12} packets  {:8.3} Mpps  {:7.3} Gbit/s  (kernel drops: {})\n",
            self.rx.packets, self.rx_mpps, self.rx_gbps, self.rx_dropped
        );
        if let (Some(lost), Some(percent)) = (self.lost, self.loss_percent) {
            s += &format!("  loss {lost} packets ({percent:.3}%)\n");
        }
        if let Some(l) = &self.latency {
            s += &format!(
                "  latency (µs, {} samples): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
                l.samples, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            );
        }
        for (name, packets) in &self.per_interface {
            s += &format!("  {name}: {packets} packets\n");
        }
        s
    }
}

/// One per-second line: `t=3s TX 0.412 Mpps 0.211 Gbit/s | RX 0.410 Mpps 0.210 Gbit/s | drops 12`.
pub fn interval_line(
    second: u64,
    tx: &Counts,
    rx: &Counts,
    drops: u64,
    elapsed: Duration,
) -> String {
    format!(
        "t={second}s TX {:.3} Mpps {:.3} Gbit/s | RX {:.3} Mpps {:.3} Gbit/s | drops {drops}",
        tx.mpps(elapsed),
        tx.gbps(elapsed),
        rx.mpps(elapsed),
        rx.gbps(elapsed)
    )
}

/// A 30-column progress bar for `done` of `total`, for terminals.
pub fn progress_bar(done: Duration, total: Duration) -> String {
    let frac = if total.is_zero() {
        1.0
    } else {
        (done.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    };
    let filled = (frac * 30.0).round() as usize;
    format!(
        "[{}{}] {:3.0}%",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        frac * 100.0
    )
}

/// Paces a sender to `pps` packets per second (0: as fast as it can): how many packets may
/// go now, `elapsed` into the run, after `sent` already went. Never more than `burst`.
pub fn allowance(pps: u64, elapsed: Duration, sent: u64, burst: u64) -> u64 {
    if pps == 0 {
        return burst;
    }
    let due = (elapsed.as_nanos() * u128::from(pps) / 1_000_000_000) as u64;
    due.saturating_sub(sent).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_the_fcs_and_divide_by_time() {
        let c = Counts {
            packets: 1_000_000,
            bytes: 60_000_000,
        };
        let second = Duration::from_secs(1);
        assert!((c.mpps(second) - 1.0).abs() < 1e-9);
        // 64 bytes on the wire * 8 bits * 1M packets = 0.512 Gbit/s.
        assert!((c.gbps(second) - 0.512).abs() < 1e-9);
        assert!((c.mpps(Duration::from_millis(500)) - 2.0).abs() < 1e-9);
        assert_eq!(c.mpps(Duration::ZERO), 0.0);
        let later = Counts {
            packets: 1_500_000,
            bytes: 90_000_000,
        };
        assert_eq!(
            later.since(&c),
            Counts {
                packets: 500_000,
                bytes: 30_000_000
            }
        );
    }

    #[test]
    fn loss_is_never_negative() {
        assert_eq!(loss(1000, 990), (10, 1.0));
        assert_eq!(loss(1000, 1005), (0, 0.0));
        assert_eq!(loss(0, 0), (0, 0.0));
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut r = LatencyRecorder::default();
        assert!(r.summary().is_none());
        for us in 1..=1000u64 {
            r.record(1_000_000, 1_000_000 + us * 1000);
        }
        let mut other = LatencyRecorder::default();
        other.record(0, 5_000_000);
        r.merge(&other);
        let s = r.summary().unwrap();
        assert_eq!(s.samples, 1001);
        // Three significant digits: within 0.2% of the exact value (plus one bucket).
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 1.0;
        assert!(near(s.p50_us, 500.0), "{s:?}");
        assert!(near(s.p90_us, 900.0), "{s:?}");
        assert!(near(s.p99_us, 990.0), "{s:?}");
        assert!(near(s.p999_us, 1000.0), "{s:?}");
        assert!(near(s.max_us, 5000.0), "{s:?}");
        // A receive time before the send time (clock skew) counts as the smallest value.
        r.record(10, 5);
        assert_eq!(r.summary().unwrap().min_us, 0.001);
    }

    #[test]
    fn the_summary_reports_loss_only_when_it_listened() {
        let mut s = Summary {
            tx: Counts {
                packets: 200,
                bytes: 12_000,
            },
            rx: Counts {
                packets: 150,
                bytes: 9_000,
            },
            ..Summary::default()
        };
        s.finish(Duration::from_secs(2), false);
        assert_eq!((s.lost, s.tx_mpps), (None, 0.0001));
        s.finish(Duration::from_secs(2), true);
        assert_eq!(s.lost, Some(50));
        assert_eq!(s.loss_percent, Some(25.0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["lost"], 50);
        assert_eq!(json["tx"]["packets"], 200);
        assert!(s.to_text().contains("loss 50 packets (25.000%)"));
    }

    #[test]
    fn pacing_allows_what_is_due_up_to_a_burst() {
        assert_eq!(allowance(0, Duration::ZERO, 0, 64), 64, "unpaced");
        assert_eq!(allowance(1000, Duration::from_millis(10), 0, 64), 10);
        assert_eq!(allowance(1000, Duration::from_millis(10), 10, 64), 0);
        assert_eq!(allowance(1_000_000, Duration::from_secs(1), 0, 64), 64);
        assert_eq!(
            interval_line(
                1,
                &Counts::default(),
                &Counts::default(),
                3,
                Duration::from_secs(1)
            ),
            "t=1s TX 0.000 Mpps 0.000 Gbit/s | RX 0.000 Mpps 0.000 Gbit/s | drops 3"
        );
        assert_eq!(
            progress_bar(Duration::from_secs(1), Duration::from_secs(2)).len(),
            37
        );
    }
}
