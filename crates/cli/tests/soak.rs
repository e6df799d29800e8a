//! Soak: the DR lab under steady mixed traffic for `SOAK_SECONDS` (60 here, as a slice of
//! `make test`; `make soak` runs 600), watching that nothing grows and no frame leaks.
//! Needs root.
//!
//! The real daemon forwards on AF_XDP while, all the time:
//! - two real clients make HTTP requests, each on a new connection;
//! - one client asks the UDP service, each question from a new port;
//! - one long-lived TCP conversation exchanges a numbered line every 50 ms;
//! - pktgen sends SYNs from spoofed sources (`XVS_SOAK_SYN_RATE` a second, 1000 by default),
//!   each a new half-open entry that expires.
//!
//! Short FIN_WAIT, UDP and SYN_RECV timeouts (5 s) let the table reach its steady size
//! within the warm-up. After it, the daemon's resident memory (VmRSS), the table's entries
//! and every worker's UMEM frames (`xvsadm --dataplane --json`) are sampled every few
//! seconds, and the test asserts:
//! - no growth: the last quarter's peak RSS is within a small slack of the first
//!   quarter's, and its peak entry count within a quarter of it;
//! - no frame leak: at every sample `free + kernel + in_flight == total` on every worker,
//!   and `in_flight` does not creep up;
//! - at least 99.9% of the HTTP requests and UDP questions are answered (counts printed),
//!   and the conversation loses no line.
//!
//! The closing summary gives the figures BENCHMARKS.md's Soak section quotes.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Requests, SynTarget, dataplane, http_client, programs, rss, syn_stream};
use xvs_cli::lab::{Conversation, HTTP_PORT, LINES_PORT, Lab, Mode, UDP_PORT};
use xvs_pktgen::wire::enter_netns;

/// Length of the run when `SOAK_SECONDS` is not set: the slice `make test` runs.
const DEFAULT_SECONDS: u64 = 60;
/// Traffic before the first sample: the 5 s timeouts turn the table over twice.
const WARM_UP: Duration = Duration::from_secs(15);
/// SYNs a second when `XVS_SOAK_SYN_RATE` is not set.
const DEFAULT_SYN_RATE: u64 = 1000;
/// FIN_WAIT, UDP and SYN_RECV lifetime in the table, seconds.
const SHORT_TIMEOUT: u32 = 5;
/// Pause between one client's requests.
const PAUSE: Duration = Duration::from_millis(20);
/// How much more resident memory the last quarter may peak at than the first.
const RSS_SLACK: u64 = 4 << 20;
/// Required share of answered HTTP requests and UDP questions.
const MIN_SUCCESS_PERCENT: f64 = 99.9;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// One worker's UMEM frames at a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Umem {
    total: u64,
    free: u64,
    kernel: u64,
    in_flight: u64,
}

impl Umem {
    fn balanced(&self) -> bool {
        self.free + self.kernel + self.in_flight == self.total
    }
}

/// What one look at the director found.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    rss: u64,
    entries: u64,
    workers: Vec<Umem>,
}

fn sample(lab: &Lab, pid: u32, at: Duration) -> Sample {
    let d = dataplane(lab);
    let n = |v: &serde_json::Value, key: &str| {
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in --dataplane --json: {v}"))
    };
    let workers = d["per_worker"]
        .as_array()
        .unwrap_or_else(|| panic!("per_worker in --dataplane --json: {d}"))
        .iter()
        .map(|w| {
            let u = &w["umem"];
            Umem {
                total: n(u, "total"),
                free: n(u, "free"),
                kernel: n(u, "kernel"),
                in_flight: n(u, "in_flight"),
            }
        })
        .collect();
    Sample {
        at,
        rss: rss(pid),
        entries: n(&d, "conn_entries"),
        workers,
    }
}

/// A real UDP client in namespace `ns`: one question after another, each from a new port,
/// `pause` apart, until `stop`.
fn udp_client(
    ns: String,
    vip: Ipv4Addr,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Requests, String> {
    enter_netns(&ns)?;
    let mut seen = Requests::default();
    while !stop.load(Ordering::Relaxed) {
        seen.record(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            socket
                .send_to(b"who", (vip, UDP_PORT))
                .map_err(|e| format!("send: {e}"))?;
            let mut buf = [0u8; 64];
            let (len, _) = socket
                .recv_from(&mut buf)
                .map_err(|e| format!("recv: {e}"))?;
            match std::str::from_utf8(&buf[..len]) {
                Ok(name @ ("rs1" | "rs2")) => Ok(name.to_string()),
                _ => Err(format!("unexpected answer {:?}", &buf[..len])),
            }
        });
        std::thread::sleep(pause);
    }
    Ok(seen)
}

/// The highest value of `f` over `samples`.
fn peak(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}

#[test]
fn the_director_under_steady_mixed_traffic_neither_grows_nor_leaks_frames() {
    let duration = Duration::from_secs(env_u64("SOAK_SECONDS", DEFAULT_SECONDS));
    let syn_rate = env_u64("XVS_SOAK_SYN_RATE", DEFAULT_SYN_RATE);
    assert!(
        duration >= WARM_UP * 3,
        "SOAK_SECONDS must be at least {} (warm-up and samples)",
        WARM_UP.as_secs() * 3
    );
    let every = if duration <= Duration::from_secs(120) {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let extra = format!(
        "[timeouts]\ntcpfin = {SHORT_TIMEOUT}\nudp = {SHORT_TIMEOUT}\n\
         [defense]\nsyn_recv_timeout = {SHORT_TIMEOUT}\n"
    );
    let lab = match Lab::start_with(Mode::Dr, programs(), &extra) {
        Ok(lab) => lab,
        Err(e) => panic!("soak lab: {e} (this test needs root, ip, ethtool, curl, python3)"),
    };
    for (protocol, port) in [("-t", HTTP_PORT), ("-t", LINES_PORT), ("-u", UDP_PORT)] {
        lab.add_service(protocol, port, "rr", None, &[1, 1])
            .unwrap();
    }
    let vip: Ipv4Addr = lab.topology.vip.parse().unwrap();
    let client_ns = lab.topology.client.name().to_string();
    let target = SynTarget::of(&lab);
    let pid = lab.director_pid().expect("the director runs");

    let conversation =
        Conversation::start(&lab.topology.client, &lab.topology.vip, duration).unwrap();
    conversation
        .wait_answered(3, Duration::from_secs(10))
        .unwrap();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (ns, stop) = (client_ns.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            http_client(ns, vip, PAUSE, stop)
        }));
    }
    let udp = {
        let (ns, stop) = (client_ns.clone(), stop.clone());
        std::thread::spawn(move || udp_client(ns, vip, PAUSE, stop))
    };
    let syns = std::thread::spawn(move || syn_stream(target, syn_rate, duration));

    let mut samples = Vec::new();
    let mut next = started + WARM_UP;
    while started.elapsed() < duration {
        if Instant::now() >= next {
            samples.push(sample(&lab, pid, started.elapsed()));
            next += every;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let mut http = Requests::default();
    for c in clients {
        http.add(c.join().unwrap().expect("an HTTP client ran"));
    }
    let mut udp = udp.join().unwrap().expect("the UDP client ran");
    let (syns_sent, syn_seconds) = syns.join().unwrap().expect("the SYN stream ran");
    let report = conversation.finish().unwrap();
    let alive = rss(pid) > 0;

    let n = samples.len();
    let quarter = (n / 4).max(1);
    let (first, last) = (&samples[..quarter], &samples[n - quarter..]);
    let rss_first = peak(first, |s| s.rss);
    let rss_last = peak(last, |s| s.rss);
    let entries_first = peak(first, |s| s.entries);
    let entries_last = peak(last, |s| s.entries);
    let in_flight = |part: &[Sample]| peak(part, |s| s.workers.iter().map(|w| w.in_flight).sum());
    let free_low = |part: &[Sample]| {
        part.iter()
            .map(|s| s.workers.iter().map(|w| w.free).sum::<u64>())
            .min()
            .unwrap_or(0)
    };
    let unbalanced: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.workers.is_empty() || !s.workers.iter().all(Umem::balanced))
        .collect();
    let (http_p50, http_p99) = (http.percentile_ms(0.50), http.percentile_ms(0.99));
    let udp_p99 = udp.percentile_ms(0.99);
    let umem_text = |s: &Sample| {
        s.workers
            .iter()
            .map(|w| {
                format!(
                    "total {} free {} kernel {} in_flight {}",
                    w.total, w.free, w.kernel, w.in_flight
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    println!(
        "soak {} s ({} samples every {} s after a {} s warm-up): \
         director RSS {} KiB at the first sample, {} KiB at the last \
         (first-quarter peak {} KiB, last-quarter peak {} KiB); \
         table entries first-quarter peak {entries_first}, last-quarter peak {entries_last}; \
         UMEM first [{}] last [{}], in_flight peak {}/{} (first/last quarter), \
         free low {}/{}, unbalanced samples {}; \
         HTTP {}/{} requests answered ({:.3}%), p50 {http_p50:.2} ms, p99 {http_p99:.2} ms; \
         UDP {}/{} answered ({:.3}%), p99 {udp_p99:.2} ms; \
         conversation {} lines answered, {} missing, longest gap {:.0} ms; \
         SYNs {syns_sent} in {syn_seconds:.1} s ({:.0}/s)",
        duration.as_secs(),
        n,
        every.as_secs(),
        WARM_UP.as_secs(),
        samples.first().map_or(0, |s| s.rss >> 10),
        samples.last().map_or(0, |s| s.rss >> 10),
        rss_first >> 10,
        rss_last >> 10,
        samples.first().map(umem_text).unwrap_or_default(),
        samples.last().map(umem_text).unwrap_or_default(),
        in_flight(first),
        in_flight(last),
        free_low(first),
        free_low(last),
        unbalanced.len(),
        http.ok,
        http.total(),
        http.success_percent(),
        udp.ok,
        udp.total(),
        udp.success_percent(),
        report.answered,
        report.missing,
        report.longest_gap_ms,
        syns_sent as f64 / syn_seconds.max(f64::MIN_POSITIVE),
    );
    for s in &samples {
        println!(
            "  t={:>4} s rss {:>7} KiB entries {:>6} umem [{}]",
            s.at.as_secs(),
            s.rss >> 10,
            s.entries,
            umem_text(s)
        );
    }
    println!("first HTTP errors: {:?}", http.errors);
    println!("first UDP errors: {:?}", udp.errors);
    println!("{}", lab.xvsadm("--dataplane").unwrap_or_default());

    assert!(alive, "the director is still running");
    assert!(n >= 8, "{n} samples");
    assert!(
        unbalanced.is_empty(),
        "free + kernel + in_flight != total: {unbalanced:?}"
    );
    assert!(
        in_flight(last) <= in_flight(first) + xvs_dataplane::packet_io::BATCH_SIZE as u64,
        "in_flight creeps up: first quarter {}, last quarter {}",
        in_flight(first),
        in_flight(last)
    );
    assert!(
        rss_last <= rss_first + RSS_SLACK,
        "director RSS grew: first-quarter peak {rss_first}, last-quarter peak {rss_last}"
    );
    assert!(
        entries_last <= entries_first + entries_first / 4 + 100,
        "table entries grew: first-quarter peak {entries_first}, last-quarter peak {entries_last}"
    );
    // The SYN stream ran: every spoofed SYN is an entry for SHORT_TIMEOUT seconds.
    assert!(
        syns_sent as f64 >= syn_rate as f64 * duration.as_secs_f64() * 0.5,
        "the SYN stream sent {syns_sent} SYNs"
    );
    assert!(
        entries_first >= syn_rate * u64::from(SHORT_TIMEOUT) / 2,
        "the table held the SYN stream's half-open entries: {entries_first}"
    );
    for (what, seen) in [("HTTP requests", &http), ("UDP questions", &udp)] {
        assert!(
            seen.total() >= duration.as_secs(),
            "the {what} kept coming: {}",
            seen.total()
        );
        assert!(
            seen.success_percent() >= MIN_SUCCESS_PERCENT,
            "{}/{} {what} answered; first errors: {:?}",
            seen.ok,
            seen.total(),
            seen.errors
        );
    }
    assert!(
        report.connected && report.missing == 0 && !report.reset && report.error.is_none(),
        "the conversation lost nothing: {report:?}"
    );
    assert!(
        report.answered >= duration.as_secs() * 10,
        "the conversation kept talking: {report:?}"
    );
}
