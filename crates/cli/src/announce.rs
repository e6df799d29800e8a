//! VIP announcement for scale-out: N directors behind a router's ECMP, each announcing the
//! VIPs over BGP with an existing daemon (bird2, FRR), and withdrawing them when it cannot
//! forward.
//!
//! xvs speaks no BGP. It holds the VIPs (as /32) on a TUN device of its own, [`DEVICE`] by
//! default, only while it is healthy and not drained; the BGP daemon's `direct` protocol
//! announces what is on that device. Healthy means: every worker runs and every interface
//! xvs forwards on is up with carrier (the dataplane's answer, see
//! [`Dataplane::forwarding_health`](crate::daemon::Dataplane::forwarding_health)). Drained
//! means the operator asked for it (`xvs drain`, or `drain = true` in `[announce]`).
//!
//! A TUN device and not a dummy one, because a TUN device lives only as long as the file
//! descriptor that created it: when xvs dies, even by SIGKILL, the kernel removes the device
//! and its addresses, and the BGP daemon withdraws at once. Nothing has to notice the death.
//!
//! The check runs on its own thread every `interval`; a change is applied in one netlink
//! request per address and logged once.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use xvs_dataplane::netdev::{NetDev, set_ipv4_address};

/// The TUN device xvs holds the VIPs on unless `[announce] device` says otherwise.
pub const DEVICE: &str = "xvsvip0";
/// How often health is checked unless `[announce] interval_ms` says otherwise.
pub const DEFAULT_INTERVAL_MS: u32 = 100;
/// How long a stopping xvs forwards after withdrawing, unless `[announce] stop_grace_ms`
/// says otherwise: the router needs the withdrawal (measured 40-110 ms in the lab) before
/// the flows stop arriving.
pub const DEFAULT_STOP_GRACE_MS: u32 = 500;

/// The `[announce]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// `device`: the TUN device's name.
    pub device: String,
    /// `addresses`: the VIPs to hold; empty (the default): every IPv4 VIP of the services.
    pub addresses: Vec<Ipv4Addr>,
    /// `drain`: hold nothing, so the BGP daemon withdraws (flows move to the other
    /// directors; this one keeps forwarding what still arrives).
    pub drain: bool,
    /// `interval_ms`: the health check's period.
    pub interval_ms: u32,
    /// `stop_grace_ms`: on SIGTERM/SIGINT, how long xvs keeps forwarding after it withdrew.
    pub stop_grace_ms: u32,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            device: DEVICE.to_string(),
            addresses: Vec::new(),
            drain: false,
            interval_ms: DEFAULT_INTERVAL_MS,
            stop_grace_ms: DEFAULT_STOP_GRACE_MS,
        }
    }
}

/// What the announcer asks the daemon at every check.
pub type StatusFn = dyn Fn() -> Status + Send + Sync;

/// The daemon's answer: the VIPs it serves and whether it can forward them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Every IPv4 VIP of the services in force.
    pub vips: Vec<Ipv4Addr>,
    /// `Err(reason)` when this director cannot forward (a worker stopped, a port down).
    pub health: Result<(), String>,
}

/// What the announcer and the rest of the daemon share: the drain switch (`xvs drain`,
/// reloads) and the VIPs on the device now (metrics).
#[derive(Debug, Default)]
pub struct Announced {
    /// Hold nothing while set.
    pub drained: AtomicBool,
    held: Mutex<Vec<Ipv4Addr>>,
}

impl Announced {
    /// Starting drained or not.
    pub fn new(drained: bool) -> Announced {
        Announced {
            drained: AtomicBool::new(drained),
            held: Mutex::default(),
        }
    }

    /// The VIPs on the device now.
    pub fn held(&self) -> Vec<Ipv4Addr> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_held(&self, vips: &[Ipv4Addr]) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = vips.to_vec();
    }
}

/// The running announcer; dropping it (or [`Announcer::stop`]) removes the device, so the
/// VIPs are withdrawn.
pub struct Announcer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Creates the device and starts checking, withdrawn while `shared.drained` is set.
    /// Fails when the device cannot be created.
    pub fn start(
        config: &AnnounceConfig,
        shared: Arc<Announced>,
        status: Arc<StatusFn>,
    ) -> std::io::Result<Announcer> {
        let tun = xvs_dataplane::local::open_tun(&config.device)?;
        let ifindex = NetDev::by_name(&config.device)?.ifindex;
        let stop = Arc::new(AtomicBool::new(false));
        let mut held = Holder {
            device: config.device.clone(),
            ifindex,
            held: Vec::new(),
            withdrawn_for: None,
            shared: shared.clone(),
        };
        let (only, interval) = (
            config.addresses.clone(),
            Duration::from_millis(u64::from(config.interval_ms.max(1))),
        );
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xvs-announce".into())
            .spawn(move || {
                // Owned by the thread: the device lives exactly as long as it.
                let _tun = tun;
                while !thread_stop.load(Ordering::Relaxed) {
                    let status = status();
                    let reason = if shared.drained.load(Ordering::Relaxed) {
                        Some("drained".to_string())
                    } else {
                        status.health.err()
                    };
                    held.apply(wanted(&only, &status.vips), reason);
                    std::thread::sleep(interval);
                }
                held.apply(Vec::new(), Some("stopping".into()));
            })?;
        tracing::info!(device = %config.device, "announcing the VIPs while healthy");
        Ok(Announcer {
            stop,
            thread: Some(thread),
        })
    }

    /// Withdraws everything and removes the device.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The VIPs to hold: those configured that the services use (all of the services' when
/// none is configured), sorted, once each.
fn wanted(only: &[Ipv4Addr], vips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = vips
        .iter()
        .copied()
        .filter(|v| only.is_empty() || only.contains(v))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The addresses on the device, as last applied.
struct Holder {
    device: String,
    ifindex: u32,
    held: Vec<Ipv4Addr>,
    /// Why nothing is held, as last logged.
    withdrawn_for: Option<String>,
    /// Where the held VIPs are published.
    shared: Arc<Announced>,
}

impl Holder {
    /// Holds `vips` unless `reason` says not to.
    fn apply(&mut self, vips: Vec<Ipv4Addr>, reason: Option<String>) {
        let target = if reason.is_some() { Vec::new() } else { vips };
        for &vip in self.held.iter().filter(|v| !target.contains(v)) {
            if let Err(e) = set_ipv4_address(false, self.ifindex, vip, 32) {
                tracing::error!(device = %self.device, %vip, "cannot remove the VIP: {e}");
            }
        }
        let mut now_held: Vec<Ipv4Addr> = self
            .held
            .iter()
            .copied()
            .filter(|v| target.contains(v))
            .collect();
        for &vip in target.iter().filter(|v| !self.held.contains(v)) {
            match set_ipv4_address(true, self.ifindex, vip, 32) {
                Ok(()) => now_held.push(vip),
                Err(e) => tracing::error!(device = %self.device, %vip, "cannot add the VIP: {e}"),
            }
        }
        if now_held != self.held {
            tracing::info!(device = %self.device, vips = ?now_held, "announced VIPs changed");
            self.shared.set_held(&now_held);
        }
        self.held = now_held;
        if reason != self.withdrawn_for {
            match &reason {
                Some(why) => tracing::warn!(device = %self.device, "VIPs withdrawn: {why}"),
                None => tracing::info!(device = %self.device, "healthy: VIPs announced"),
            }
            self.withdrawn_for = reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_is_the_configured_subset_of_the_services_vips() {
        let a = Ipv4Addr::new(172, 16, 21, 10);
        let b = Ipv4Addr::new(172, 16, 21, 11);
        assert_eq!(wanted(&[], &[b, a, b]), vec![a, b]);
        assert_eq!(wanted(&[a], &[b, a]), vec![a]);
        assert_eq!(
            wanted(&[Ipv4Addr::new(10, 0, 0, 1)], &[a]),
            Vec::<Ipv4Addr>::new(),
            "a configured VIP no service uses is not announced"
        );
    }
}
