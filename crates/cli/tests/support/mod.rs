//! What the lab tests that load the director share: the programs under test, the daemon's
//! resident memory, real HTTP clients with their latencies, pktgen's SYN stream from
//! spoofed sources, and `xvsadm --dataplane --json`. The lab itself (namespaces, servers,
//! the daemon, cleanup on drop) is [`xvs_cli::lab::Lab`].
//!
//! Each test crate uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xvs_cli::lab::{HTTP_PORT, Lab, Programs};
use xvs_pktgen::frame::Addressing;
use xvs_pktgen::pattern::{FlowSpace, FrameSize, Mode as Traffic, Pattern};
use xvs_pktgen::wire::{SendOptions, Sender, enter_netns};

/// The `xvs` and `xvsadm` cargo built for this test crate.
pub fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

/// Resident memory of process `pid` in bytes (VmRSS), 0 if it is gone.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// One HTTP/1.0 GET to `vip` on a new connection: the body's server name, or why not.
pub fn request(vip: Ipv4Addr) -> Result<String, String> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((vip, HTTP_PORT)), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    match body {
        "rs1" | "rs2" => Ok(body.to_string()),
        _ => Err(format!("unexpected answer {answer:?}")),
    }
}

/// What real clients saw: successes with their latencies, failures with the first reasons.
#[derive(Default)]
pub struct Requests {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub latencies_us: Vec<u64>,
}

impl Requests {
    /// Times `ask` and counts its outcome.
    pub fn record(&mut self, ask: impl FnOnce() -> Result<String, String>) {
        let started = Instant::now();
        match ask() {
            Ok(_) => {
                self.ok += 1;
                self.latencies_us.push(started.elapsed().as_micros() as u64);
            }
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < 5 {
                    self.errors.push(e);
                }
            }
        }
    }

    pub fn add(&mut self, other: Requests) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.errors.extend(other.errors.into_iter().take(5));
        self.latencies_us.extend(other.latencies_us);
    }

    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    /// Percentage of requests that succeeded.
    pub fn success_percent(&self) -> f64 {
        self.ok as f64 * 100.0 / self.total().max(1) as f64
    }

    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// A real HTTP client in namespace `ns`: one request after another (each a new connection),
/// `pause` apart, until `stop`.
pub fn http_client(
    ns: String,
    vip: Ipv4Addr,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Requests, String> {
    enter_netns(&ns)?;
    let mut seen = Requests::default();
    while !stop.load(Ordering::Relaxed) {
        seen.record(|| request(vip));
        std::thread::sleep(pause);
    }
    Ok(seen)
}

/// Where pktgen's SYNs go: from the client's namespace through the router to the VIP.
#[derive(Clone)]
pub struct SynTarget {
    pub ns: String,
    pub vip: Ipv4Addr,
    pub client_mac: [u8; 6],
    pub router_mac: [u8; 6],
}

impl SynTarget {
    /// The lab's client toward its VIP. Makes one request through the VIP first, so the
    /// router's MAC is in the client's neighbour table.
    pub fn of(lab: &Lab) -> SynTarget {
        let first = lab.http_get().unwrap();
        assert!(first == "rs1" || first == "rs2", "{first:?}");
        let neigh = lab
            .topology
            .client
            .exec("ip", &["neigh", "show", "172.16.0.254"])
            .unwrap();
        let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
        let router_mac = neigh
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .and_then(parse_mac)
            .unwrap_or_else(|| panic!("the router's MAC in {neigh:?}"));
        SynTarget {
            ns: lab.topology.client.name().to_string(),
            vip: lab.topology.vip.parse().unwrap(),
            client_mac: parse_mac(&lab.topology.client.mac("eth0").unwrap()).unwrap(),
            router_mac,
        }
    }
}

/// Spoofed sources of the SYN stream: 10.99.0.1 .. 10.99.1.0, which the router has no route
/// back to (the real servers' SYN-ACKs die there).
pub const SPOOFED_BASE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const SPOOFED_ADDRESSES: u32 = 256;

/// pktgen's AF_XDP sender on the client's `eth0`: SYNs to VIP:80 through the router, every
/// one a new flow from a spoofed source, at `rate` a second (0: as fast as it goes) for
/// `duration`. Returns (SYNs sent, seconds). Runs at the lowest priority, so it takes only
/// what CPU the lab leaves.
pub fn syn_stream(target: SynTarget, rate: u64, duration: Duration) -> Result<(u64, f64), String> {
    let SynTarget {
        ns,
        vip,
        client_mac,
        router_mac,
    } = target;
    enter_netns(&ns)?;
    // SAFETY: setpriority on this thread's own id; it only lowers its scheduling priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
    let addressing = Addressing {
        src_mac: client_mac,
        dst_mac: router_mac,
        dst: vip,
        dst_port: HTTP_PORT,
        ipv6: None,
    };
    let space = FlowSpace::from(SPOOFED_BASE, SPOOFED_ADDRESSES);
    let mut pattern = Pattern::new(Traffic::New, 0, space, FrameSize::Fixed(64), &addressing);
    let mut sender = Sender::open("eth0")?;
    let options = SendOptions {
        rate,
        duration,
        live: false,
    };
    let summary = sender.run(&mut pattern, &options, Vec::new())?;
    Ok((summary.tx.packets, summary.seconds))
}

/// `xvsadm --dataplane --json`, parsed.
pub fn dataplane(lab: &Lab) -> serde_json::Value {
    let json = lab
        .xvsadm("--dataplane --json")
        .expect("--dataplane --json");
    serde_json::from_str(&json).expect("JSON")
}
