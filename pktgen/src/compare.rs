//! `make bench-compare`: xvs against the kernel's own answer on this machine, in one run.
//!
//! The lab's NAT topology (`xvs_lab::Topology`: client — director ext0 | int0 — bridge —
//! two real servers) carries the traffic. In alternating rounds of a fixed length either
//!
//! - **xvs** forwards: `xvs run` on ext0 + int0 with `-A -u VIP:80 -s rr` and the two real
//!   servers `-m` (and the same for TCP), or
//! - **the kernel** forwards: xvs stopped, `nft` in the director:
//!   `ip daddr VIP udp dport 80 dnat to numgen inc mod 2 map { 0 : RIP1, 1 : RIP2 }` (and
//!   `tcp dport 80`), `net.ipv4.ip_forward=1`.
//!
//! The client runs `xvs-pktgen send` (AF_XDP, UDP, N flows, 64-byte frames, as fast as it
//! can); forwarded packets are the real servers' `eth0` receive counters. UDP rather than TCP
//! for packets per second: both forwarders then keep one entry per flow from its first packet
//! on, where raw TCP ACKs without a handshake would be dropped by xvs (IPVS opens TCP on SYN
//! only) and picked up by conntrack. CPU per packet comes from `/proc/stat` (the whole
//! machine's busy time, and its softirq time, where the kernel forwards) and, for xvs, the
//! daemon's own CPU time from `/proc/PID/stat`. Connections per second use real TCP
//! ([`crate::tcp`]): a connect/close client in the client namespace, an accept/close server on
//! each real server.
//!
//! Every namespace, process and nft table is removed when the run ends, also on failure
//! (the topology's namespaces kill what runs inside them when dropped).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use xvs_lab::netns::{LabError, LabResult, unique_tag};
use xvs_lab::{Mode, RealServerSetup, Topology, wait_for};

use crate::report::Summary;
use crate::tcp::CpsResult;

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Rounds per forwarder (alternating).
    pub rounds: u32,
    /// Seconds per round.
    pub seconds: f64,
    /// UDP flows.
    pub flows: u64,
    /// Seconds of the connections-per-second test per forwarder (0: skip).
    pub cps_seconds: f64,
    /// Connecting threads of that test (each waits for its handshake: more threads, more
    /// connections in flight).
    pub cps_threads: usize,
    /// Packets per second of the latency test, listening at the real servers (0: skip).
    pub latency_rate: u64,
    /// Bulk downloads per forwarder (alternating; 0: skip).
    pub bulk_rounds: u32,
    /// MiB of each bulk download.
    pub bulk_mib: u64,
    /// The `xvs` binary.
    pub xvs: PathBuf,
    /// The `xvsadm` binary.
    pub xvsadm: PathBuf,
    /// This program (`xvs-pktgen`), run inside the namespaces.
    pub pktgen: PathBuf,
    /// Niceness of the xvs daemon (its worker busy-polls the forwarder CPU).
    pub xvs_nice: i32,
    /// The workers' own nice value (`[daemon] worker_nice`).
    pub xvs_worker_nice: i32,
    /// CPU the client (sender, connecting threads) is pinned to.
    pub client_cpu: usize,
    /// CPU the forwarder works on: xvs's worker is pinned there; the kernel's forwarding is
    /// steered there with RPS on the director's external interface.
    pub forwarder_cpu: usize,
}

/// Who forwards in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarder {
    /// xvs on AF_XDP.
    Xvs,
    /// xvs's I/O ceiling (`xvs run --io-ceiling`): the same daemon, sockets and worker loop,
    /// each frame only re-addressed (Ethernet header) toward a real server and sent.
    Ceiling,
    /// nftables DNAT with numgen round robin.
    Kernel,
}

impl Forwarder {
    fn name(self) -> &'static str {
        match self {
            Forwarder::Xvs => "xvs",
            Forwarder::Ceiling => "ceiling",
            Forwarder::Kernel => "kernel",
        }
    }
}

/// One measured round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Who forwarded.
    pub forwarder: Forwarder,
    /// Round number, from 1.
    pub round: u32,
    /// Seconds sent.
    pub seconds: f64,
    /// Packets the client sent, millions per second.
    pub sent_mpps: f64,
    /// Packets the real servers received, millions per second.
    pub forwarded_mpps: f64,
    /// Received by each real server.
    pub per_server: Vec<u64>,
    /// Whole-machine busy CPU time per forwarded packet, ns (sender and receivers included).
    pub machine_ns_per_packet: f64,
    /// Softirq CPU time per forwarded packet, ns (where the kernel forwards).
    pub softirq_ns_per_packet: f64,
    /// The xvs daemon's own CPU time per forwarded packet, ns (a busy-polling core included).
    pub daemon_ns_per_packet: Option<f64>,
}

/// One bulk download: a single HTTP GET of `bulk_mib` MiB by `curl` in the client
/// namespace from a real server through the forwarder.
#[derive(Debug, Clone, Serialize)]
pub struct BulkRound {
    /// Who forwarded.
    pub forwarder: Forwarder,
    /// Round number, from 1.
    pub round: u32,
    /// Bytes curl received.
    pub bytes: u64,
    /// Seconds the transfer took (curl's `time_total`, connection included).
    pub seconds: f64,
    /// `bytes / seconds / 10^6`.
    pub mb_per_s: f64,
    /// TCP segments the real servers retransmitted meanwhile (`RetransSegs`).
    pub retransmits: u64,
    /// Packets the director's internal interface received meanwhile: about 46,000 for
    /// 64 MiB when the data arrives as 1500-byte frames, far fewer when it arrives as
    /// GRO/GSO aggregates.
    pub director_rx_packets: u64,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// AF_XDP bind mode xvs reported.
    pub xdp_mode: String,
    /// Measured rounds, in the order run.
    pub rounds: Vec<Round>,
    /// Median forwarded Mpps of xvs.
    pub xvs_mpps: f64,
    /// Median forwarded Mpps of the kernel.
    pub kernel_mpps: f64,
    /// `xvs_mpps / kernel_mpps`.
    pub ratio: f64,
    /// Median forwarded Mpps of xvs's I/O ceiling.
    pub ceiling_mpps: f64,
    /// `xvs_mpps / ceiling_mpps`.
    pub ceiling_ratio: f64,
    /// Connections per second through xvs.
    pub xvs_cps: Option<CpsResult>,
    /// Connections per second through the kernel.
    pub kernel_cps: Option<CpsResult>,
    /// Bulk downloads, in the order run.
    pub bulk: Vec<BulkRound>,
    /// Median MB/s of xvs's bulk downloads.
    pub xvs_bulk_mb_per_s: f64,
    /// Median MB/s of the kernel's.
    pub kernel_bulk_mb_per_s: f64,
    /// The paced run through xvs with listeners at the real servers.
    pub xvs_latency: Option<Summary>,
    /// The same through the kernel.
    pub kernel_latency: Option<Summary>,
}

/// Seconds of the latency test per forwarder.
const LATENCY_SECONDS: f64 = 3.0;

const VIP_PORT: u16 = 80;
/// The bulk download's service port (HTTP, `xvs-pktgen http-bytes` on the real servers).
const BULK_PORT: u16 = 8080;
/// Packets per second of the untimed warm-up before each round (neighbours, flows).
const WARM_UP_RATE: &str = "20k";

/// The lab, its forwarders and helpers; everything goes when it drops.
struct Bench {
    topology: Topology,
    options: CompareOptions,
    dir: PathBuf,
    director_mac: String,
    xvs: Option<Child>,
    helpers: Vec<Child>,
    xdp_mode: String,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.stop_xvs();
        let _ = self.kernel_off();
        for child in &mut self.helpers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn err(e: impl std::fmt::Display) -> LabError {
    LabError(e.to_string())
}

impl Bench {
    fn new(options: CompareOptions) -> LabResult<Bench> {
        let dir = std::env::temp_dir().join(format!("xvs-compare-{}", unique_tag()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        // NAT real servers need no `xvs realserver` setup; the setup names where it would go.
        let setup = RealServerSetup::new(&options.xvs, &dir);
        let topology = Topology::build(Mode::Nat, &setup).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        topology.director.sysctl("net.ipv4.ip_forward", "1")?;
        let director_mac = topology.director.mac(&topology.director_ifaces[0])?;
        let mut bench = Bench {
            topology,
            options,
            dir,
            director_mac,
            xvs: None,
            helpers: Vec::new(),
            xdp_mode: "unknown".into(),
        };
        for i in 0..bench.topology.real_servers.len() {
            let mut sink = bench.topology.real_servers[i]
                .ns
                .command(&bench.options.pktgen.to_string_lossy());
            sink.args(["tcp-sink", "--port", &VIP_PORT.to_string()]);
            let child = sink
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(err)?;
            bench.helpers.push(child);
            let mut http = bench.topology.real_servers[i]
                .ns
                .command(&bench.options.pktgen.to_string_lossy());
            let bytes = (bench.options.bulk_mib << 20).to_string();
            http.args([
                "http-bytes",
                "--port",
                &BULK_PORT.to_string(),
                "--bytes",
                &bytes,
            ]);
            let child = http
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(err)?;
            bench.helpers.push(child);
        }
        Ok(bench)
    }

    fn rips(&self) -> Vec<String> {
        self.topology
            .real_servers
            .iter()
            .map(|rs| rs.rip.clone())
            .collect()
    }

    fn xvsadm(&self, args: &str) -> LabResult<String> {
        let out = Command::new(&self.options.xvsadm)
            .args(args.split_whitespace())
            .env("XVS_SOCKET", self.dir.join("xvs.sock"))
            .stdin(Stdio::null())
            .output()
            .map_err(err)?;
        if !out.status.success() {
            return Err(LabError(format!(
                "xvsadm {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_xvs(&mut self, io_ceiling: bool) -> LabResult<()> {
        let ifaces = &self.topology.director_ifaces;
        // IPVS's default table size (4096 -> 262144 entries), the same number of entries as
        // the kernel's nf_conntrack_max here. A much larger table (1048576 -> 67M entries,
        // 7 GiB of untouched huge-page-advised memory) makes every new flow in a fresh
        // region take a 2 MiB page fault, zeroing and often compaction on the worker: the
        // first second of each xvs phase then lost most frames and CPS runs stalled for
        // seconds.
        let config = format!(
            "[daemon]\nexternal = \"{}\"\ninternal = \"{}\"\nqueues = 1\ncores = [{}]\n\
             conn_table_size = 4096\nworker_nice = {}\n",
            ifaces[0], ifaces[1], self.options.forwarder_cpu, self.options.xvs_worker_nice
        );
        let config_path = self.dir.join("xvs.toml");
        std::fs::write(&config_path, config).map_err(err)?;
        let log = std::fs::File::create(self.dir.join("xvs.log")).map_err(err)?;
        // `nice` execs xvs, so the child's pid stays the daemon's (`--xvs-nice`: the kernel's
        // forwarding runs in softirq, which pre-empts any process on its CPU).
        let mut command = self.topology.director.command("nice");
        command
            .args(["-n", &self.options.xvs_nice.to_string()])
            .arg(&self.options.xvs)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(self.dir.join("xvs.sock"))
            .args(io_ceiling.then_some("--io-ceiling"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log);
        self.xvs = Some(command.spawn().map_err(err)?);
        wait_for("xvs's control socket", Duration::from_secs(15), || {
            self.xvsadm("-L -n").is_ok()
        })?;
        let vip = &self.topology.vip;
        for (proto, port) in [("-u", VIP_PORT), ("-t", VIP_PORT), ("-t", BULK_PORT)] {
            self.xvsadm(&format!("-A {proto} {vip}:{port} -s rr"))?;
            for rip in self.rips() {
                self.xvsadm(&format!("-a {proto} {vip}:{port} -r {rip}:{port} -m"))?;
            }
        }
        let log = std::fs::read_to_string(self.dir.join("xvs.log")).unwrap_or_default();
        if let Some(mode) = ["zero-copy", "copy"]
            .iter()
            .find(|m| log.contains(&format!("mode={m}")))
        {
            self.xdp_mode = mode.to_string();
        }
        Ok(())
    }

    fn stop_xvs(&mut self) -> LabResult<()> {
        if self.xvs.is_none() {
            return Ok(());
        }
        if std::env::var_os("XVS_COMPARE_DEBUG").is_some()
            && let Ok(text) = self.xvsadm("--dataplane")
        {
            eprintln!("{text}");
        }
        let Some(mut child) = self.xvs.take() else {
            return Ok(());
        };
        // `ip netns exec` execs xvs, so the child's pid is the daemon's.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().map_err(err)?.is_some() {
                if std::env::var_os("XVS_COMPARE_DEBUG").is_some() {
                    let log = std::fs::read_to_string(self.dir.join("xvs.log")).unwrap_or_default();
                    for line in log
                        .lines()
                        .filter(|l| l.contains("kernel counters") || l.contains("TX budget"))
                    {
                        eprintln!("{line}");
                    }
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    fn start(&mut self, forwarder: Forwarder) -> LabResult<()> {
        match forwarder {
            Forwarder::Xvs => self.start_xvs(false),
            Forwarder::Ceiling => {
                self.vip_on_real_servers(true)?;
                self.start_xvs(true)
            }
            Forwarder::Kernel => self.kernel_on(),
        }
    }

    fn stop(&mut self, forwarder: Forwarder) -> LabResult<()> {
        match forwarder {
            Forwarder::Xvs => self.stop_xvs(),
            Forwarder::Ceiling => {
                let stopped = self.stop_xvs();
                self.vip_on_real_servers(false)?;
                stopped
            }
            Forwarder::Kernel => self.kernel_off(),
        }
    }

    /// During the ceiling's rounds the real servers hold the VIP on `lo` (not answering ARP
    /// for it, as DR real servers), so the frames the ceiling leaves addressed to the VIP go
    /// up their UDP stack exactly as the translated frames of the other rows do, instead of
    /// being discarded early as not theirs: the work downstream of the director, which copy
    /// mode runs partly in the daemon's `sendto`, is then the same for every row.
    fn vip_on_real_servers(&self, on: bool) -> LabResult<()> {
        let vip = format!("{}/32", self.topology.vip);
        for rs in &self.topology.real_servers {
            if on {
                rs.ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
                rs.ns.exec("ip", &["addr", "add", &vip, "dev", "lo"])?;
            } else {
                let _ = rs.ns.exec("ip", &["addr", "del", &vip, "dev", "lo"]);
                rs.ns.sysctl("net.ipv4.conf.all.arp_ignore", "0")?;
            }
        }
        Ok(())
    }

    fn kernel_on(&self) -> LabResult<()> {
        let vip = &self.topology.vip;
        let rips = self.rips();
        let map = format!("{{ 0 : {}, 1 : {} }}", rips[0], rips[1]);
        let script = format!(
            "table ip xvsbench {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    \
             ip daddr {vip} udp dport {VIP_PORT} dnat to numgen inc mod 2 map {map}\n    \
             ip daddr {vip} tcp dport {{ {VIP_PORT}, {BULK_PORT} }} dnat to numgen inc mod 2 map {map}\n  }}\n}}\n"
        );
        let path = self.dir.join("dnat.nft");
        std::fs::write(&path, script).map_err(err)?;
        self.topology
            .director
            .exec("nft", &["-f", &path.to_string_lossy()])?;
        self.steer_external(1u64 << self.options.forwarder_cpu)
    }

    fn kernel_off(&self) -> LabResult<()> {
        self.steer_external(0)?;
        self.topology
            .director
            .exec("nft", &["delete", "table", "ip", "xvsbench"])
            .map(|_| ())
    }

    /// RPS on the director's external interface: its receive processing (the kernel's
    /// forwarding) runs on the CPUs of `mask` instead of the sender's; 0 turns it off.
    fn steer_external(&self, mask: u64) -> LabResult<()> {
        let path = format!(
            "/sys/class/net/{}/queues/rx-0/rps_cpus",
            self.topology.director_ifaces[0]
        );
        self.topology
            .director
            .exec("sh", &["-c", &format!("echo {mask:x} > {path}")])
            .map(|_| ())
    }

    /// Packets received so far by each real server's interface.
    fn server_counts(&self) -> LabResult<Vec<u64>> {
        self.topology
            .real_servers
            .iter()
            .map(|rs| {
                let path = format!("/sys/class/net/{}/statistics/rx_packets", rs.dev);
                let out = rs.ns.exec("cat", &[&path])?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .map_err(|e| LabError(format!("{path}: {e}")))
            })
            .collect()
    }

    /// Runs this program with `args` in the client namespace, pinned to the client CPU;
    /// its standard output.
    fn client_run(&self, args: &[&str]) -> LabResult<Vec<u8>> {
        let cpu = self.options.client_cpu.to_string();
        let pktgen = self.options.pktgen.to_string_lossy();
        let mut all = vec![
            "-c",
            &cpu,
            "ip",
            "netns",
            "exec",
            self.topology.client.name(),
        ];
        all.push(&pktgen);
        all.extend_from_slice(args);
        xvs_lab::netns::run("taskset", &all).map(|out| out.stdout)
    }

    /// Runs `xvs-pktgen send` in the client namespace, listening at the real servers when
    /// `listen`; its JSON summary.
    fn send(&self, seconds: f64, rate: &str, listen: bool) -> LabResult<Summary> {
        let t = &self.topology;
        let listeners: Vec<String> = t
            .real_servers
            .iter()
            .filter(|_| listen)
            .flat_map(|rs| {
                [
                    "--listen".to_string(),
                    format!("{}:{}:{}", rs.ns.name(), rs.dev, rs.rip),
                ]
            })
            .collect();
        let (port, flows, seconds) = (
            VIP_PORT.to_string(),
            self.options.flows.to_string(),
            seconds.to_string(),
        );
        let mut args = vec![
            "send",
            "--iface",
            "eth0",
            "--dst-mac",
            &self.director_mac,
            "--dst",
            &t.vip,
            "--port",
            &port,
            "--src",
            &t.client_ip,
            "--mode",
            "udp",
            "--flows",
            &flows,
            "--rate",
            rate,
            "--duration",
            &seconds,
            "--quiet",
            "--json",
        ];
        args.extend(listeners.iter().map(String::as_str));
        let out = self.client_run(&args)?;
        parse_summary(&String::from_utf8_lossy(&out))
    }

    fn round(&mut self, forwarder: Forwarder, round: u32) -> LabResult<Round> {
        self.start(forwarder)?;
        // Untimed: neighbours resolve, flows open.
        self.send(1.0, WARM_UP_RATE, false)?;
        let servers_before = self.server_counts()?;
        let cpu_before = CpuTimes::read()?;
        let daemon_before = self.xvs.as_ref().and_then(|c| process_cpu_ns(c.id()));
        let summary = self.send(self.options.seconds, "0", false)?;
        // Let in-flight packets land before reading the counters.
        std::thread::sleep(Duration::from_millis(100));
        let daemon_after = self.xvs.as_ref().and_then(|c| process_cpu_ns(c.id()));
        let cpu_after = CpuTimes::read()?;
        let servers_after = self.server_counts()?;
        self.stop(forwarder)?;
        let per_server: Vec<u64> = servers_after
            .iter()
            .zip(&servers_before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let forwarded: u64 = per_server.iter().sum();
        let per_packet = |ns: u64| ns as f64 / forwarded.max(1) as f64;
        let seconds = summary.seconds.max(1e-9);
        Ok(Round {
            forwarder,
            round,
            seconds,
            sent_mpps: summary.tx_mpps,
            forwarded_mpps: forwarded as f64 / seconds / 1e6,
            per_server,
            machine_ns_per_packet: per_packet(cpu_after.busy_ns - cpu_before.busy_ns),
            softirq_ns_per_packet: per_packet(cpu_after.softirq_ns - cpu_before.softirq_ns),
            daemon_ns_per_packet: match (daemon_before, daemon_after) {
                (Some(b), Some(a)) => Some(per_packet(a.saturating_sub(b))),
                _ => None,
            },
        })
    }

    /// A paced run with listeners on both real servers: one-way latency, loss, spread.
    fn latency(&mut self, forwarder: Forwarder) -> LabResult<Summary> {
        self.start(forwarder)?;
        let rate = self.options.latency_rate.to_string();
        let result = self
            .send(1.0, WARM_UP_RATE, false)
            .and_then(|_| self.send(LATENCY_SECONDS, &rate, true));
        self.stop(forwarder)?;
        result
    }

    /// TCP segments the real servers have retransmitted so far (`/proc/net/snmp`, per
    /// namespace).
    fn server_retransmits(&self) -> LabResult<u64> {
        let mut total = 0;
        for rs in &self.topology.real_servers {
            let out = rs.ns.exec("cat", &["/proc/net/snmp"])?;
            total += parse_retrans_segs(&String::from_utf8_lossy(&out.stdout))
                .ok_or_else(|| LabError("no Tcp RetransSegs in /proc/net/snmp".into()))?;
        }
        Ok(total)
    }

    /// Packets the director's internal interface has received so far.
    fn director_rx_packets(&self) -> LabResult<u64> {
        let path = format!(
            "/sys/class/net/{}/statistics/rx_packets",
            self.topology.director_ifaces[1]
        );
        let out = self.topology.director.exec("cat", &[&path])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| LabError(format!("{path}: {e}")))
    }

    /// One bulk download through `forwarder`: `curl` in the client namespace, pinned to the
    /// client CPU, fetching `bulk_mib` MiB from VIP:8080.
    fn bulk(&mut self, forwarder: Forwarder, round: u32) -> LabResult<BulkRound> {
        self.start(forwarder)?;
        let result = self.send(1.0, WARM_UP_RATE, false).and_then(|_| {
            let before = self.server_retransmits()?;
            let rx_before = self.director_rx_packets()?;
            let url = format!("http://{}:{BULK_PORT}/bulk", self.topology.vip);
            let cpu = self.options.client_cpu.to_string();
            let out = xvs_lab::netns::run(
                "taskset",
                &[
                    "-c",
                    &cpu,
                    "ip",
                    "netns",
                    "exec",
                    self.topology.client.name(),
                    "curl",
                    "-s",
                    "--fail",
                    "--max-time",
                    "60",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download} %{time_total}",
                    &url,
                ],
            )?;
            let after = self.server_retransmits()?;
            let rx_after = self.director_rx_packets()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let (bytes, seconds) = parse_curl_size_time(&text)
                .ok_or_else(|| LabError(format!("curl printed {text:?}")))?;
            if bytes != self.options.bulk_mib << 20 {
                return Err(LabError(format!(
                    "bulk download got {bytes} bytes of {}",
                    self.options.bulk_mib << 20
                )));
            }
            Ok(BulkRound {
                forwarder,
                round,
                bytes,
                seconds,
                mb_per_s: bytes as f64 / seconds.max(1e-9) / 1e6,
                retransmits: after.saturating_sub(before),
                director_rx_packets: rx_after.saturating_sub(rx_before),
            })
        });
        self.stop(forwarder)?;
        result
    }

    fn cps(&mut self, forwarder: Forwarder) -> LabResult<CpsResult> {
        self.start(forwarder)?;
        // Untimed, as before the other phases: the real servers' neighbours resolve first.
        // Without it xvs drops the first SYNs while they resolve (the kernel queues them),
        // and each connecting thread's first attempt waits out the 1 s timeout.
        if let Err(e) = self.send(1.0, WARM_UP_RATE, false) {
            self.stop(forwarder)?;
            return Err(e);
        }
        let target = format!("{}:{VIP_PORT}", self.topology.vip);
        let result = self.client_run(&[
            "cps",
            "--target",
            &target,
            "--duration",
            &self.options.cps_seconds.to_string(),
            "--threads",
            &self.options.cps_threads.to_string(),
            "--json",
        ]);
        self.stop(forwarder)?;
        serde_json::from_slice(&result?).map_err(|e| LabError(format!("cps output: {e}")))
    }
}

/// `Tcp: ... RetransSegs ...` from `/proc/net/snmp` text (a header line, then values).
fn parse_retrans_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let names = tcp.next()?;
    let values = tcp.next()?;
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// `"67108864 0.412345"`, curl's `%{size_download} %{time_total}`.
fn parse_curl_size_time(text: &str) -> Option<(u64, f64)> {
    let mut words = text.split_whitespace();
    let bytes = words.next()?.parse().ok()?;
    let seconds = words.next()?.parse().ok()?;
    Some((bytes, seconds))
}

fn parse_summary(json: &str) -> LabResult<Summary> {
    serde_json::from_str(json).map_err(|e| LabError(format!("pktgen output: {e}: {json}")))
}

/// Whole-machine CPU times from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time not idle (user, nice, system, irq, softirq, steal), ns.
    pub busy_ns: u64,
    /// Softirq time, ns.
    pub softirq_ns: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn read() -> LabResult<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").map_err(err)?;
        CpuTimes::parse(&text, clock_ticks())
            .ok_or_else(|| LabError("unreadable /proc/stat".into()))
    }

    /// The aggregate `cpu` line of `/proc/stat` text, in ticks of `1/hz` s.
    pub fn parse(text: &str, hz: u64) -> Option<CpuTimes> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let ns = |t: u64| t * 1_000_000_000 / hz.max(1);
        Some(CpuTimes {
            busy_ns: ns(busy),
            softirq_ns: ns(field(6)),
        })
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// User + system CPU time of process `pid` (all its threads), ns.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&text).map(|t| t * 1_000_000_000 / clock_ticks())
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name in
/// parentheses may contain spaces).
pub fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Runs the comparison. `progress` gets a line per step; `stop` (set on Ctrl-C) ends it
/// between steps, and everything is removed on the way out.
pub fn run(
    options: CompareOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&str),
) -> LabResult<Comparison> {
    let check = || {
        if stop.load(Ordering::Relaxed) {
            Err(LabError("interrupted".into()))
        } else {
            Ok(())
        }
    };
    for program in [&options.xvs, &options.xvsadm, &options.pktgen] {
        if !Path::new(program).exists() {
            return Err(LabError(format!("{} not found", program.display())));
        }
    }
    let mut bench = Bench::new(options.clone())?;
    let mut rounds = Vec::new();
    for r in 1..=options.rounds {
        for forwarder in [Forwarder::Xvs, Forwarder::Ceiling, Forwarder::Kernel] {
            check()?;
            let round = bench.round(forwarder, r)?;
            progress(&format!(
                "round {r} {:6}: {:.3} Mpps forwarded ({:.3} sent)",
                forwarder.name(),
                round.forwarded_mpps,
                round.sent_mpps
            ));
            rounds.push(round);
        }
    }
    let (mut xvs_latency, mut kernel_latency) = (None, None);
    if options.latency_rate > 0 {
        check()?;
        let x = bench.latency(Forwarder::Xvs)?;
        progress(&format!("latency xvs: {}", latency_line(&x)));
        check()?;
        let k = bench.latency(Forwarder::Kernel)?;
        progress(&format!("latency kernel: {}", latency_line(&k)));
        (xvs_latency, kernel_latency) = (Some(x), Some(k));
    }
    let (mut xvs_cps, mut kernel_cps) = (None, None);
    if options.cps_seconds > 0.0 {
        check()?;
        let x = bench.cps(Forwarder::Xvs)?;
        progress(&format!("cps xvs: {:.0}/s", x.per_second));
        check()?;
        let k = bench.cps(Forwarder::Kernel)?;
        progress(&format!("cps kernel: {:.0}/s", k.per_second));
        (xvs_cps, kernel_cps) = (Some(x), Some(k));
    }
    let mut bulk = Vec::new();
    for r in 1..=options.bulk_rounds {
        for forwarder in [Forwarder::Xvs, Forwarder::Kernel] {
            check()?;
            let b = bench.bulk(forwarder, r)?;
            progress(&format!(
                "bulk {r} {:6}: {:.1} MB/s ({} retransmits)",
                forwarder.name(),
                b.mb_per_s,
                b.retransmits
            ));
            bulk.push(b);
        }
    }
    let bulk_of = |f: Forwarder| {
        median(
            bulk.iter()
                .filter(|b| b.forwarder == f)
                .map(|b| b.mb_per_s)
                .collect(),
        )
    };
    let (xvs_bulk_mb_per_s, kernel_bulk_mb_per_s) =
        (bulk_of(Forwarder::Xvs), bulk_of(Forwarder::Kernel));
    let mpps_of = |f: Forwarder| {
        median(
            rounds
                .iter()
                .filter(|r| r.forwarder == f)
                .map(|r| r.forwarded_mpps)
                .collect(),
        )
    };
    let (xvs_mpps, kernel_mpps) = (mpps_of(Forwarder::Xvs), mpps_of(Forwarder::Kernel));
    let ceiling_mpps = mpps_of(Forwarder::Ceiling);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(Comparison {
        xdp_mode: bench.xdp_mode.clone(),
        rounds,
        xvs_mpps,
        kernel_mpps,
        ratio: ratio(xvs_mpps, kernel_mpps),
        ceiling_mpps,
        ceiling_ratio: ratio(xvs_mpps, ceiling_mpps),
        xvs_cps,
        kernel_cps,
        bulk,
        xvs_bulk_mb_per_s,
        kernel_bulk_mb_per_s,
        xvs_latency,
        kernel_latency,
    })
}

/// `p50 12.1 µs, p90 .., p99 .., p99.9 .., max ..; loss 0.000%; rs1 1500, rs2 1500`.
fn latency_line(s: &Summary) -> String {
    let latency = s.latency.map_or("no samples".to_string(), |l| {
        format!(
            "p50 {:.1} µs, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        )
    });
    let spread: Vec<String> = s.per_interface.values().map(u64::to_string).collect();
    format!(
        "{latency}; loss {:.3}%; per real server {}",
        s.loss_percent.unwrap_or(0.0),
        spread.join(" / ")
    )
}

/// `12000 handshakes (300 reset by the server before the client looked, 2 SYN retransmits),
/// 0 failed; handshake p50 .. µs, p90 .., p99 .., max ..`.
fn cps_line(c: &CpsResult) -> String {
    let times = c.handshake.map_or("no handshakes".to_string(), |h| {
        format!(
            "handshake p50 {:.0} µs, p90 {:.0}, p99 {:.0}, max {:.0}",
            h.p50_us, h.p90_us, h.p99_us, h.max_us
        )
    });
    format!(
        "{} handshakes ({} reset by the server before the client looked, {} with a SYN retransmit), {} failed; {times}",
        c.connections, c.reset_after_handshake, c.syn_retransmitted, c.failures
    )
}

impl Comparison {
    /// The table `make bench-compare` prints.
    pub fn to_text(&self, options: &CompareOptions) -> String {
        let mut s = format!(
            "xvs (AF_XDP, {} mode, NAT, rr) vs kernel (nftables DNAT numgen inc mod 2), \
             UDP {} flows, 64-byte frames, {} s rounds; client on CPU {}, forwarder on CPU {}\n\n",
            self.xdp_mode,
            options.flows,
            options.seconds,
            options.client_cpu,
            options.forwarder_cpu
        );
        s += "| forwarder | round | sent Mpps | forwarded Mpps | rs1 / rs2 | machine CPU ns/pkt | softirq ns/pkt | xvs daemon ns/pkt |\n";
        s += "|---|---|---|---|---|---|---|---|\n";
        for r in &self.rounds {
            let daemon = r
                .daemon_ns_per_packet
                .map_or("-".to_string(), |ns| format!("{ns:.0}"));
            let servers: Vec<String> = r.per_server.iter().map(u64::to_string).collect();
            s += &format!(
                "| {} | {} | {:.3} | {:.3} | {} | {:.0} | {:.0} | {} |\n",
                r.forwarder.name(),
                r.round,
                r.sent_mpps,
                r.forwarded_mpps,
                servers.join(" / "),
                r.machine_ns_per_packet,
                r.softirq_ns_per_packet,
                daemon
            );
        }
        s += &format!(
            "\nmedian forwarded: xvs {:.3} Mpps, kernel {:.3} Mpps, ratio xvs/kernel {:.2} (AF_XDP {} mode)\n",
            self.xvs_mpps, self.kernel_mpps, self.ratio, self.xdp_mode
        );
        s += &format!(
            "I/O ceiling (same sockets and worker loop, Ethernet header only): {:.3} Mpps, xvs/ceiling {:.2}\n",
            self.ceiling_mpps, self.ceiling_ratio
        );
        if let (Some(x), Some(k)) = (&self.xvs_latency, &self.kernel_latency) {
            s += &format!(
                "one-way latency client -> real server at {} pps (UDP, {} s, listening on both real servers):\n  xvs:    {}\n  kernel: {}\n",
                options.latency_rate,
                LATENCY_SECONDS,
                latency_line(x),
                latency_line(k)
            );
        }
        if !self.bulk.is_empty() {
            let rounds: Vec<String> = self
                .bulk
                .iter()
                .map(|b| {
                    format!(
                        "{} {:.1} ({} retransmits, {} packets in)",
                        b.forwarder.name(),
                        b.mb_per_s,
                        b.retransmits,
                        b.director_rx_packets
                    )
                })
                .collect();
            let ratio = if self.kernel_bulk_mb_per_s > 0.0 {
                self.xvs_bulk_mb_per_s / self.kernel_bulk_mb_per_s
            } else {
                0.0
            };
            s += &format!(
                "bulk download ({} MiB over one HTTP connection, curl): median xvs {:.1} MB/s, kernel {:.1} MB/s, ratio {:.2}; rounds: {}\n",
                options.bulk_mib,
                self.xvs_bulk_mb_per_s,
                self.kernel_bulk_mb_per_s,
                ratio,
                rounds.join(", ")
            );
        }
        if let (Some(x), Some(k)) = (&self.xvs_cps, &self.kernel_cps) {
            let ratio = if k.per_second > 0.0 {
                x.per_second / k.per_second
            } else {
                0.0
            };
            s += &format!(
                "connections per second (TCP connect + RST close, {} threads): xvs {:.0}, kernel {:.0}, ratio {:.2}\n  xvs:    {}\n  kernel: {}\n",
                options.cps_threads,
                x.per_second,
                k.per_second,
                ratio,
                cps_line(x),
                cps_line(k)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_busy_and_softirq_time() {
        let text = "cpu  100 5 50 1000 7 3 40 2 0 0\ncpu0 50 2 25 500 3 1 20 1 0 0\n";
        let t = CpuTimes::parse(text, 100).unwrap();
        // user + nice + system + irq + softirq + steal = 200 ticks = 2 s.
        assert_eq!(t.busy_ns, 2_000_000_000);
        assert_eq!(t.softirq_ns, 400_000_000);
        assert_eq!(CpuTimes::parse("intr 1 2 3\n", 100), None);
    }

    #[test]
    fn process_stat_skips_a_name_with_spaces() {
        let stat = "1234 (xvs worker 0) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_process_ticks(stat), Some(325));
        assert_eq!(parse_process_ticks("garbage"), None);
        assert!(process_cpu_ns(std::process::id()).is_some());
    }

    #[test]
    fn retransmits_and_curl_figures_are_read() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 17 0\n";
        assert_eq!(parse_retrans_segs(snmp), Some(17));
        assert_eq!(parse_retrans_segs("Ip: 1\n"), None);
        assert_eq!(
            parse_curl_size_time("67108864 0.412500"),
            Some((67108864, 0.4125))
        );
        assert_eq!(parse_curl_size_time("oops"), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn the_table_has_a_row_per_round_and_the_ratio() {
        let round = |forwarder, mpps| Round {
            forwarder,
            round: 1,
            seconds: 5.0,
            sent_mpps: 0.7,
            forwarded_mpps: mpps,
            per_server: vec![10, 10],
            machine_ns_per_packet: 3000.0,
            softirq_ns_per_packet: 1000.0,
            daemon_ns_per_packet: None,
        };
        let c = Comparison {
            xdp_mode: "copy".into(),
            rounds: vec![round(Forwarder::Xvs, 0.4), round(Forwarder::Kernel, 0.5)],
            xvs_mpps: 0.4,
            kernel_mpps: 0.5,
            ratio: 0.8,
            ceiling_mpps: 0.5,
            ceiling_ratio: 0.8,
            xvs_cps: None,
            kernel_cps: None,
            bulk: Vec::new(),
            xvs_bulk_mb_per_s: 0.0,
            kernel_bulk_mb_per_s: 0.0,
            xvs_latency: None,
            kernel_latency: None,
        };
        let options = CompareOptions {
            rounds: 1,
            seconds: 5.0,
            flows: 1024,
            cps_seconds: 0.0,
            cps_threads: 1,
            latency_rate: 0,
            bulk_rounds: 0,
            bulk_mib: 64,
            xvs: "xvs".into(),
            xvsadm: "xvsadm".into(),
            pktgen: "xvs-pktgen".into(),
            xvs_nice: -20,
            xvs_worker_nice: 0,
            client_cpu: 0,
            forwarder_cpu: 1,
        };
        let text = c.to_text(&options);
        assert!(
            text.contains("| xvs | 1 | 0.700 | 0.400 | 10 / 10 | 3000 | 1000 | - |"),
            "{text}"
        );
        assert!(
            text.contains("ratio xvs/kernel 0.80 (AF_XDP copy mode)"),
            "{text}"
        );
        assert!(text.contains("0.500 Mpps, xvs/ceiling 0.80"), "{text}");
    }
}
