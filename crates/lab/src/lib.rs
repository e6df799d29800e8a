//! # xvs-lab
//!
//! The seed tutorials' topologies as network namespaces joined by veth links, built with
//! `ip` as an operator would and removed when dropped, for everything that needs a lab: the
//! `xvs lab` command and the end-to-end tests (crates/cli), and `xvs-pktgen compare`, which
//! measures xvs against the kernel in the same topology. The programs that run in a lab (the
//! daemon, real servers, keepalived) are started by `xvs_cli::lab`; this crate knows only
//! namespaces, links and addresses.
//!
//! - [`netns`]: a namespace, a veth pair, `ip`/`sysctl`/`ethtool` inside one, unique names;
//! - [`topology`]: the seeds' DR, NAT and TUN labs, the two-director HA lab and the
//!   scale-out lab (N directors behind ECMP).

pub mod netns;
pub mod topology;

use std::time::{Duration, Instant};

pub use netns::{LabError, LabResult, Namespace};
pub use topology::{Mode, RealServerHost, RealServerSetup, ScaleOutTopology, Topology};

/// Polls `ready` every 100 ms until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> LabResult<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError(format!("timed out waiting for {what}")))
}
