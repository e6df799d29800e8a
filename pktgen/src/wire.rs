//! Sending and receiving over AF_XDP, with xvs's own frame I/O.
//!
//! The sender is one [`AfXdpPorts`] socket on the client interface: frames are written from
//! the pattern 64 at a time and queued with [`AfXdpPorts::transmit_frames`]; no XDP program
//! is needed to transmit. A listener is a thread that enters a namespace (`setns` affects only
//! the calling thread, so one process can listen on every real server of a lab), attaches
//! xvs's [`XdpFilter`] to an interface with `Match::any` for the addresses traffic arrives
//! with there (the VIP for DR, the real server's address for NAT and TUN), and counts what
//! its socket receives; everything else still goes to the kernel. Frames carrying a send time
//! give one-way latency: receive time minus send time, both `CLOCK_MONOTONIC`, shared by all
//! namespaces. Listeners sleep in `poll()` when idle, so on a small machine they leave the
//! cores to the sender and the director.

use std::fs::File;
use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xvs_dataplane::afxdp::{AfXdpPorts, CopyMode, XskConfig, XskError};
use xvs_dataplane::netdev::NetDev;
use xvs_dataplane::packet_io::{BATCH_SIZE, PacketIo};
use xvs_dataplane::xdp::{AttachMode, Match, XdpFilter};

use crate::frame::{MAX_FRAME, parse};
use crate::pattern::Pattern;
use crate::report::{Counts, LatencyRecorder, Summary, allowance, interval_line, progress_bar};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock send times are written in.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Moves the calling thread into network namespace `name` (as `ip netns exec` would).
pub fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Where to listen: `[NETNS:]IFACE:ADDR[+ADDR...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// Namespace to enter (`None`: the process's own).
    pub netns: Option<String>,
    /// Interface to attach to.
    pub iface: String,
    /// Destination addresses to take from the interface (the rest goes to the kernel).
    pub addrs: Vec<Ipv4Addr>,
}

impl std::str::FromStr for ListenSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (netns, iface, addrs) = match parts.as_slice() {
            [iface, addrs] => (None, *iface, *addrs),
            [netns, iface, addrs] => (Some(netns.to_string()), *iface, *addrs),
            _ => return Err(format!("'{s}': expected [NETNS:]IFACE:ADDR[+ADDR...]")),
        };
        let addrs = addrs
            .split('+')
            .map(|a| a.parse().map_err(|e| format!("'{a}': {e}")))
            .collect::<Result<Vec<Ipv4Addr>, String>>()?;
        if iface.is_empty() || addrs.is_empty() {
            return Err(format!("'{s}': expected [NETNS:]IFACE:ADDR[+ADDR...]"));
        }
        Ok(ListenSpec {
            netns: netns.filter(|n| !n.is_empty()),
            iface: iface.to_string(),
            addrs,
        })
    }
}

impl ListenSpec {
    /// A name for reports: `netns:iface` or `iface`.
    pub fn label(&self) -> String {
        match &self.netns {
            Some(ns) => format!("{ns}:{}", self.iface),
            None => self.iface.clone(),
        }
    }
}

/// Counters a listener thread shares while it runs.
#[derive(Debug, Default)]
struct Live {
    packets: AtomicU64,
    bytes: AtomicU64,
    kernel_drops: AtomicU64,
}

/// A running listener.
pub struct Listener {
    label: String,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<LatencyRecorder, String>>,
}

/// Sockets are ready when this many milliseconds pass without an error.
const LISTENER_SETUP: Duration = Duration::from_secs(10);

impl Listener {
    /// Starts listening as `spec` says; returns once the socket receives.
    pub fn start(spec: &ListenSpec) -> Result<Listener, String> {
        let live = Arc::new(Live::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (spec, live, stop) = (spec.clone(), live.clone(), stop.clone());
            std::thread::spawn(move || listen(&spec, &live, &stop, ready_tx))
        };
        match ready_rx.recv_timeout(LISTENER_SETUP) {
            Ok(()) => Ok(Listener {
                label: spec.label(),
                live,
                stop,
                thread,
            }),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                match thread.join() {
                    Ok(Err(e)) => Err(format!("listener {}: {e}", spec.label())),
                    _ => Err(format!("listener {}: not ready in time", spec.label())),
                }
            }
        }
    }

    /// What it received so far.
    pub fn counts(&self) -> Counts {
        Counts {
            packets: self.live.packets.load(Ordering::Relaxed),
            bytes: self.live.bytes.load(Ordering::Relaxed),
        }
    }

    /// Frames its kernel socket dropped so far.
    pub fn kernel_drops(&self) -> u64 {
        self.live.kernel_drops.load(Ordering::Relaxed)
    }

    /// Stops it; its label, counts, drops and latencies.
    pub fn finish(self) -> Result<(String, Counts, u64, LatencyRecorder), String> {
        self.stop.store(true, Ordering::Relaxed);
        let latency = self
            .thread
            .join()
            .map_err(|_| format!("listener {} panicked", self.label))??;
        let counts = Counts {
            packets: self.live.packets.load(Ordering::Relaxed),
            bytes: self.live.bytes.load(Ordering::Relaxed),
        };
        Ok((
            self.label,
            counts,
            self.live.kernel_drops.load(Ordering::Relaxed),
            latency,
        ))
    }
}

fn listen(
    spec: &ListenSpec,
    live: &Live,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<LatencyRecorder, String> {
    if let Some(ns) = &spec.netns {
        enter_netns(ns)?;
    }
    let dev = NetDev::by_name(&spec.iface).map_err(|e| format!("{}: {e}", spec.iface))?;
    let mut filter = XdpFilter::attach(dev.ifindex, AttachMode::Auto).map_err(|e| e.to_string())?;
    let mut ports =
        AfXdpPorts::open(&[&spec.iface], 0, &XskConfig::default()).map_err(|e| e.to_string())?;
    let fd = ports.socket_fd(0).ok_or("no socket")?;
    filter.register_socket(0, fd).map_err(|e| e.to_string())?;
    let matches: Vec<Match> = spec.addrs.iter().map(|&a| Match::any(a)).collect();
    filter.set_vips(&matches).map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let mut latency = LatencyRecorder::default();
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut packets = 0u64;
        let mut bytes = 0u64;
        let summary = ports
            .poll(BATCH_SIZE * 4, &mut |_, frames, _verdicts| {
                let now = monotonic_ns();
                for frame in frames.iter() {
                    let data = frame.data();
                    packets += 1;
                    bytes += data.len() as u64;
                    if let Some(sent) = parse(data).and_then(|r| r.stamp_ns) {
                        latency.record(sent, now);
                    }
                }
                // Verdicts stay Drop: the frames go back to the fill ring.
            })
            .map_err(|e| e.to_string())?;
        live.packets.fetch_add(packets, Ordering::Relaxed);
        live.bytes.fetch_add(bytes, Ordering::Relaxed);
        if summary.received == 0 {
            idle += 1;
            if idle >= 16 {
                if let Ok(k) = ports.kernel_stats(0) {
                    let drops = k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty;
                    live.kernel_drops.store(drops, Ordering::Relaxed);
                }
                ports
                    .wait(Duration::from_millis(2))
                    .map_err(|e| e.to_string())?;
            }
        } else {
            idle = 0;
        }
    }
    if let Ok(k) = ports.kernel_stats(0) {
        let drops = k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty;
        live.kernel_drops.store(drops, Ordering::Relaxed);
    }
    Ok(latency)
}

/// How long a busy queue is retried: the kernel releases a closed socket's binding
/// asynchronously, so a socket opened right after another one closed may see EBUSY.
const BUSY_RETRY: Duration = Duration::from_secs(15);

/// Sockets that only send give the kernel few frames to receive into, so nearly all the frame
/// memory can be in flight on the TX ring.
fn sender_config() -> XskConfig {
    XskConfig {
        rx_ring: 64,
        fill_ring: 64,
        ..XskConfig::default()
    }
}

/// One AF_XDP socket on queue 0 of `iface` (copy or zero-copy, whatever the driver offers).
fn open_socket(iface: &str, config: &XskConfig) -> Result<AfXdpPorts, String> {
    let deadline = Instant::now() + BUSY_RETRY;
    loop {
        match AfXdpPorts::open(&[iface], 0, config) {
            Ok(ports) => return Ok(ports),
            Err(XskError::Socket { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How long a paced sender sleeps when no packet is due.
const PACED_IDLE: Duration = Duration::from_micros(20);

/// How to send (the interface is the [`Sender`]'s).
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Packets per second; 0 for as fast as possible.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Print a line per second (and a progress bar on a terminal) to stderr.
    pub live: bool,
}

/// The sender's socket: opened once, used for the opening phase and the run.
pub struct Sender {
    ports: AfXdpPorts,
    buffers: Vec<Vec<u8>>,
}

impl Sender {
    /// Opens an AF_XDP socket on `iface`, queue 0.
    pub fn open(iface: &str) -> Result<Sender, String> {
        let ports = open_socket(iface, &sender_config())?;
        Ok(Sender {
            ports,
            buffers: vec![vec![0; MAX_FRAME]; BATCH_SIZE],
        })
    }

    /// Copy or zero-copy.
    pub fn mode(&self) -> CopyMode {
        self.ports.mode(0).unwrap_or(CopyMode::Copy)
    }

    /// Queues the first `lens.len()` buffers, each `lens[i]` bytes long, retrying until all
    /// went or `deadline` passed; how many went.
    fn push(&mut self, lens: &[usize], deadline: Instant) -> usize {
        let mut sent = 0;
        while sent < lens.len() {
            let frames: Vec<&[u8]> = self.buffers[sent..lens.len()]
                .iter()
                .zip(&lens[sent..])
                .map(|(b, &n)| &b[..n])
                .collect();
            let n = self.ports.transmit_frames(0, &frames);
            sent += n;
            if n == 0 && Instant::now() > deadline {
                break;
            }
        }
        sent
    }

    /// Opens the pattern's flows (established: one SYN each), then waits `settle` for the
    /// director to see them; how many SYNs went.
    pub fn open_flows(&mut self, pattern: &Pattern, settle: Duration) -> u64 {
        let mut lens = Vec::with_capacity(BATCH_SIZE);
        let mut sent = 0u64;
        let mut scratch = vec![0u8; MAX_FRAME];
        let deadline = Instant::now() + Duration::from_secs(30);
        pattern.opening(&mut scratch, |frame| {
            let i = lens.len();
            self.buffers[i][..frame.len()].copy_from_slice(frame);
            lens.push(frame.len());
            if lens.len() == BATCH_SIZE {
                sent += self.push(&lens, deadline) as u64;
                lens.clear();
                // Opening is paced a little: the director schedules and inserts each one.
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        if !lens.is_empty() {
            sent += self.push(&lens, deadline) as u64;
        }
        self.drain();
        std::thread::sleep(settle);
        sent
    }

    /// Wakes the kernel until every queued frame left the TX ring (copy mode sends a few
    /// dozen per wake-up), for at most a second.
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.ports.tx_pending(0) > 0 && Instant::now() < deadline {
            self.ports.flush_tx(0);
        }
    }

    /// Sends `pattern` as `options` say while `listeners` count; the summary.
    pub fn run(
        &mut self,
        pattern: &mut Pattern,
        options: &SendOptions,
        listeners: Vec<Listener>,
    ) -> Result<Summary, String> {
        let mut summary = Summary {
            xdp_mode: self.mode().to_string(),
            ..Summary::default()
        };
        let started = Instant::now();
        let end = started + options.duration;
        let terminal = std::io::stderr().is_terminal();
        let mut tx = Counts::default();
        let mut ring_full = 0u64;
        let mut lens = [0usize; BATCH_SIZE];
        // Frames written but not yet queued: `lens[..ready]`. A frame the ring refused is
        // retried, never skipped, so every flow gets its share even under back-pressure.
        let mut ready = 0usize;
        // What listeners saw before this run (an opening phase's SYNs) is not this run's.
        let baselines: Vec<Counts> = listeners.iter().map(Listener::counts).collect();
        let (mut last_tick, mut last_tx, mut last_rx) = (started, tx, sum_counts(&listeners));
        let mut second = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let due = allowance(
                options.rate,
                now - started,
                tx.packets + ready as u64,
                (BATCH_SIZE - ready) as u64,
            ) as usize;
            if due > 0 {
                let stamp = monotonic_ns();
                let fresh = self.buffers[ready..ready + due].iter_mut();
                for (buf, len) in fresh.zip(&mut lens[ready..ready + due]) {
                    *len = pattern.write_next(buf, stamp);
                }
                ready += due;
            }
            if ready > 0 {
                let frames: Vec<&[u8]> = self.buffers[..ready]
                    .iter()
                    .zip(&lens[..ready])
                    .map(|(b, &n)| &b[..n])
                    .collect();
                let queued = self.ports.transmit_frames(0, &frames);
                for &n in &lens[..queued] {
                    tx.add(n);
                }
                if queued < ready {
                    ring_full += 1;
                    self.buffers[..ready].rotate_left(queued);
                    lens[..ready].rotate_left(queued);
                }
                ready -= queued;
            } else if options.rate > 0 {
                // Nothing due: leave the core to the listeners (and whatever shares it) for a
                // moment rather than spin; the next call sends what fell due meanwhile.
                std::thread::sleep(PACED_IDLE);
            }
            if options.live && now.duration_since(last_tick) >= Duration::from_secs(1) {
                second += 1;
                let rx = sum_counts(&listeners);
                let drops = listeners.iter().map(Listener::kernel_drops).sum::<u64>();
                let mut line = interval_line(
                    second,
                    &tx.since(&last_tx),
                    &rx.since(&last_rx),
                    drops,
                    now - last_tick,
                );
                if terminal {
                    line += &format!("  {}", progress_bar(now - started, options.duration));
                }
                eprintln!("{line}");
                (last_tick, last_tx, last_rx) = (now, tx, rx);
            }
        }
        // Queued frames count as sent: make sure they are, and count the time it takes.
        self.drain();
        let elapsed = started.elapsed();
        // Frames in flight reach the listeners within a few milliseconds.
        std::thread::sleep(Duration::from_millis(200));
        let listened = !listeners.is_empty();
        let mut latency = LatencyRecorder::default();
        for (listener, baseline) in listeners.into_iter().zip(&baselines) {
            let (label, counts, drops, recorded) = listener.finish()?;
            let counts = counts.since(baseline);
            summary.rx.packets += counts.packets;
            summary.rx.bytes += counts.bytes;
            summary.rx_dropped += drops;
            summary.per_interface.insert(label, counts.packets);
            latency.merge(&recorded);
        }
        summary.tx = tx;
        summary.tx_ring_full = ring_full;
        summary.latency = latency.summary();
        summary.finish(elapsed, listened);
        Ok(summary)
    }
}

fn sum_counts(listeners: &[Listener]) -> Counts {
    listeners.iter().fold(Counts::default(), |mut acc, l| {
        let c = l.counts();
        acc.packets += c.packets;
        acc.bytes += c.bytes;
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs_parse_with_and_without_a_namespace() {
        let spec: ListenSpec = "ns1:eth0:10.0.0.1+172.16.0.1".parse().unwrap();
        assert_eq!(spec.netns.as_deref(), Some("ns1"));
        assert_eq!(spec.iface, "eth0");
        assert_eq!(
            spec.addrs,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(172, 16, 0, 1)]
        );
        assert_eq!(spec.label(), "ns1:eth0");
        let spec: ListenSpec = "eth1:10.0.0.2".parse().unwrap();
        assert_eq!((spec.netns, spec.iface.as_str()), (None, "eth1"));
        assert!("eth1".parse::<ListenSpec>().is_err());
        assert!("eth1:not-an-address".parse::<ListenSpec>().is_err());
        assert!("a:b:c:d".parse::<ListenSpec>().is_err());
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 2_000_000);
    }
}
