//! Network namespaces and veth links for the lab, removed when dropped.
//!
//! Everything is done with `ip` (iproute2), exactly as an operator following the seed
//! tutorials would, so a failing lab can be reproduced by hand. Names carry a per-run tag
//! (process id and a counter) so concurrent labs and tests do not collide, and every
//! namespace is deleted on drop, which also deletes the links inside it, even when a step
//! failed halfway.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A failed lab step: the command and what it printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LabError(pub String);

/// Result of a lab step.
pub type LabResult<T> = Result<T, LabError>;

/// A short tag for this process and call: `<pid mod 10000>x<n>`, unique among the labs that
/// run at the same time unless two processes' ids agree modulo 10000 (namespace creation
/// then fails cleanly). Interface names are limited to 15 bytes, so tags stay short.
pub fn unique_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}x{}", std::process::id() % 10_000, n)
}

/// Runs `program args...`, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> LabResult<Output> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError(format!("cannot run {program}: {e}")))?;
    if !output.status.success() {
        return Err(LabError(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` with its loopback up.
    pub fn create(name: &str) -> LabResult<Namespace> {
        run("ip", &["netns", "add", name])?;
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> LabResult<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args...` inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> LabResult<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace (for long-running children).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.name.as_str(), program]);
        command
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward=1`, ...).
    pub fn sysctl(&self, key: &str, value: &str) -> LabResult<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Gives `dev` the address `cidr` and brings it up.
    pub fn addr(&self, dev: &str, cidr: &str) -> LabResult<()> {
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"]).map(|_| ())
    }

    /// Turns off transmit checksum offload on `dev`. Kernel sockets on veth otherwise leave
    /// TCP/UDP checksums for the "hardware" to fill, and an AF_XDP forwarder would pass them
    /// on incomplete; a real NIC delivers complete checksums.
    pub fn no_tx_offload(&self, dev: &str) -> LabResult<()> {
        self.exec("ethtool", &["-K", dev, "tx", "off"]).map(|_| ())
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> LabResult<String> {
        let out = self.ip(&["-o", "link", "show", dev])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .ok_or_else(|| LabError(format!("no MAC for {dev} in {}", self.name)))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Kills what still runs inside, then deletes the namespace and its links.
        if let Ok(out) = run("ip", &["netns", "pids", &self.name]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = run("kill", &["-9", pid]);
            }
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with end `a` in namespace `ns_a` and end `b` in `ns_b`.
pub fn veth(a: &str, ns_a: &Namespace, b: &str, ns_b: &Namespace) -> LabResult<()> {
    run(
        "ip",
        &[
            "link",
            "add",
            a,
            "netns",
            ns_a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b.name(),
        ],
    )
    .map(|_| ())
}
