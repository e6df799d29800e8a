//! SYN floods against the DR lab with a small connection table (65 536 entries), while real
//! clients keep making HTTP requests through the VIP and one long-lived conversation runs.
//! Needs root.
//!
//! pktgen's AF_XDP sender floods the VIP from the client's namespace with SYNs from 256
//! spoofed addresses (every SYN a new flow; the real servers' SYN-ACKs to them die at the
//! router). Two floods, one defence each:
//!
//! - **The table's defence** (`drop_entry`, `secure_tcp`; the XDP SYN filter off): first a
//!   3 s burst flat out measures what the lab carries to the director, then the flood runs
//!   30 s at 70% of that rate, a flood the worker can take (about 2 to 5 times the issue's
//!   20 000 SYN/s here). The table fills within a second and stays full; `drop_entry` evicts
//!   the oldest half-open entries for new ones.
//! - **The whole defence, flat out** (the daemon's defaults): pktgen as fast as it goes, far
//!   beyond what the worker can take, so without a filter the kernel drops frames at the
//!   full RX ring, real clients' with the flood's (about 90% of requests succeed then). The
//!   automatic SYN filter turns on within a second and drops the spoofed SYNs in XDP; each
//!   client's first SYN waits for its retransmission (about 1 s), then its address is proven.
//!
//! Both check that:
//! - at least 99% of the real clients' requests succeed (success rate, p50/p99/max latency
//!   and the flood's rate are printed);
//! - the conversation that was established before the flood loses no line;
//! - the daemon's resident memory stays below what the table may take when full;
//! - the director reports the defence in force (`--dataplane --json`), and the defence ends
//!   after the flood.

mod support;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Requests, SynTarget, dataplane, http_client, programs, rss, syn_stream};
use xvs_cli::forwarding::ENTRIES_PER_BUCKET;
use xvs_cli::lab::{Conversation, HTTP_PORT, LINES_PORT, Lab, Mode};

/// IPVS's `size=`: 1024 buckets, 65 536 entries.
const TABLE_SIZE: u32 = 1024;
const FLOOD: Duration = Duration::from_secs(30);
/// The burst that measures what the lab carries.
const CALIBRATION: Duration = Duration::from_secs(3);
/// Concurrent real clients, each making one request after another.
const CLIENTS: usize = 2;
/// Half-open entries' lifetime under `secure_tcp` (the default is 10 s; shorter here so the
/// test sees the table recover soon after the flood).
const SECURE_SYN_RECV: u64 = 5;

/// Frames the director has received (`--dataplane --json`).
fn director_rx(lab: &Lab) -> u64 {
    dataplane(lab)["rx_frames"].as_u64().expect("rx_frames")
}

/// `xvsadm --dataplane --json`'s defence section.
fn defense(lab: &Lab) -> serde_json::Value {
    dataplane(lab)["defense"].clone()
}

/// One flood at a time: each takes both cores flat out, so two at once would measure neither,
/// and under two floods the kernel's deferred release of a closed AF_XDP socket (the
/// calibration burst's) can take longer than pktgen waits for the queue.
static ONE_FLOOD: Mutex<()> = Mutex::new(());

/// How fast the flood goes.
enum Rate {
    /// This share of what a burst flat out carried to the director.
    OfCarried(f64),
    /// As fast as pktgen sends.
    FlatOut,
}

/// What one flood showed.
struct Flood {
    syns: u64,
    seconds: f64,
    seen: Requests,
    /// The defence sections read every 5 s during the flood, and after it.
    during: Vec<serde_json::Value>,
    after: serde_json::Value,
}

/// Floods the DR lab at `rate` for [`FLOOD`] with `defense` as the `[defense]` section, the
/// clients and the conversation running; checks what both floods must hold and returns the
/// rest for the caller.
fn flood(
    defense_toml: &str,
    rate: Rate,
    defence_ended: impl Fn(&serde_json::Value) -> bool,
) -> Flood {
    let _one_flood = ONE_FLOOD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let lab = match Lab::start_with(
        Mode::Dr,
        programs(),
        &format!(
            "conn_table_size = {TABLE_SIZE}\n[defense]\nsecure_syn_recv_timeout = {SECURE_SYN_RECV}\n{defense_toml}"
        ),
    ) {
        Ok(lab) => lab,
        Err(e) => panic!("flood lab: {e} (this test needs root, ip, ethtool, curl, python3)"),
    };
    lab.add_service("-t", HTTP_PORT, "rr", None, &[1, 1])
        .unwrap();
    lab.add_service("-t", LINES_PORT, "rr", None, &[1, 1])
        .unwrap();
    let vip: Ipv4Addr = lab.topology.vip.parse().unwrap();
    let client_ns = lab.topology.client.name().to_string();
    let target = SynTarget::of(&lab);
    let pid = lab.director_pid().expect("the director runs");
    let rss_start = rss(pid);
    let entries = TABLE_SIZE as usize * ENTRIES_PER_BUCKET;
    let cap = rss_start + xvs_conntrack::memory_when_full(entries, 1) + (8 << 20);

    let (flood_rate, calibration) = match rate {
        Rate::FlatOut => (0, String::from("flat out")),
        Rate::OfCarried(share) => {
            // What the lab carries: a burst flat out, counted where it arrives.
            let before = director_rx(&lab);
            let (burst, burst_secs) = {
                let target = target.clone();
                std::thread::spawn(move || syn_stream(target, 0, CALIBRATION))
                    .join()
                    .unwrap()
                    .expect("the burst ran")
            };
            let carried = (director_rx(&lab) - before) as f64 / burst_secs;
            (
                (carried * share) as u64,
                format!(
                    "burst: {burst} SYNs sent in {burst_secs:.1} s, {carried:.0}/s reached the director"
                ),
            )
        }
    };

    // The established conversation, through the whole flood.
    let conversation = Conversation::start(
        &lab.topology.client,
        &lab.topology.vip,
        FLOOD + Duration::from_secs(3),
    )
    .unwrap();
    conversation
        .wait_answered(3, Duration::from_secs(10))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (ns, stop) = (client_ns.clone(), stop.clone());
            std::thread::spawn(move || http_client(ns, vip, Duration::from_millis(10), stop))
        })
        .collect();
    let sender = std::thread::spawn(move || syn_stream(target, flood_rate, FLOOD));
    // While it floods: the daemon's memory, and the defence as the director reports it.
    let mut rss_peak = rss_start;
    let mut during = Vec::new();
    let started = Instant::now();
    let mut next_look = started + Duration::from_secs(5);
    while !sender.is_finished() {
        rss_peak = rss_peak.max(rss(pid));
        if Instant::now() >= next_look {
            during.push(defense(&lab));
            next_look += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let flood_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let (syns, seconds) = sender.join().unwrap().expect("the flood ran");
    let mut seen = Requests::default();
    for c in clients {
        seen.add(c.join().unwrap().expect("a client ran"));
    }
    let report = conversation.finish().unwrap();
    let after = defense(&lab);
    // After the flood the defence ends: the half-open entries leave on secure_tcp's short
    // timer (IPVS's 60 s SYN_RECV timeout kept the table full for 35 s more), the SYN
    // filter after its calm seconds.
    let limit = Duration::from_secs(SECURE_SYN_RECV.max(10) + 10);
    while !defence_ended(&defense(&lab)) && flood_ended.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered = flood_ended.elapsed();

    let total = seen.total();
    let success = seen.success_percent();
    let rate = syns as f64 / seconds.max(f64::MIN_POSITIVE);
    let (p50, p99, max) = (
        seen.percentile_ms(0.50),
        seen.percentile_ms(0.99),
        seen.percentile_ms(1.0),
    );
    println!(
        "{calibration}; flood: {syns} SYNs in {seconds:.1} s ({rate:.0}/s) at a {entries}-entry table; \
         clients: {}/{total} requests succeeded ({success:.2}%), p50 {p50:.2} ms, p99 {p99:.2} ms, \
         max {max:.0} ms; conversation: {} lines answered, {} missing, longest gap {:.0} ms; \
         director RSS {} -> peak {} KiB (cap {} KiB); defence ended {:.1} s after the flood",
        seen.ok,
        report.answered,
        report.missing,
        report.longest_gap_ms,
        rss_start >> 10,
        rss_peak >> 10,
        cap >> 10,
        recovered.as_secs_f64(),
    );
    println!("defence during the flood: {during:?}; after: {after}");
    println!("first client errors: {:?}", seen.errors);
    println!("{}", lab.xvsadm("--dataplane").unwrap_or_default());
    for rs in &lab.topology.real_servers {
        let nstat = rs.ns.exec(
            "nstat",
            &[
                "-az",
                "TcpExtListenOverflows",
                "TcpExtListenDrops",
                "TcpExtSyncookiesSent",
                "TcpExtSyncookiesRecv",
                "TcpExtTCPReqQFullDrop",
                "TcpExtTCPReqQFullDoCookies",
            ],
        );
        if let Ok(o) = nstat {
            println!("{}: {}", rs.name, String::from_utf8_lossy(&o.stdout));
        }
    }
    assert!(
        syns as usize > 4 * entries,
        "the flood ({syns} SYNs) must be far larger than the table ({entries})"
    );
    assert!(total >= 100, "the clients kept asking ({total} requests)");
    assert!(
        success >= 99.0,
        "{success:.2}% of {total} requests succeeded; first errors: {:?}",
        seen.errors
    );
    assert!(
        report.connected && report.missing == 0 && !report.reset && report.error.is_none(),
        "the established conversation kept working: {report:?}"
    );
    assert!(
        recovered < limit,
        "the defence was still in force {recovered:?} after the flood"
    );
    assert!(
        rss_peak <= cap,
        "director RSS {rss_peak} above the table's cap {cap}"
    );
    Flood {
        syns,
        seconds,
        seen,
        during,
        after,
    }
}

/// The table's defence alone, against a flood the worker can take.
#[test]
fn real_clients_are_served_through_a_syn_flood_that_fills_the_table() {
    let f = flood("syn_filter = 0\n", Rate::OfCarried(0.7), |d| {
        d["under_pressure"] == false
    });
    let entries = (TABLE_SIZE as usize * ENTRIES_PER_BUCKET) as u64;
    assert!(
        f.after["evicted"].as_u64().unwrap_or(0) > entries,
        "the table filled and kept evicting: {}",
        f.after
    );
    assert!(
        f.during
            .iter()
            .any(|d| d["under_pressure"] == true && d["drop_entry"] == 2),
        "defence in force during the flood: {:?}",
        f.during
    );
    assert!(
        f.during.iter().all(|d| d["syn_filter"] == 0),
        "the SYN filter stayed off"
    );
}

/// The daemon's defaults against pktgen flat out: the SYN filter holds the flood in XDP.
#[test]
fn real_clients_are_served_through_a_syn_flood_flat_out() {
    let f = flood("", Rate::FlatOut, |d| d["syn_filter"] == 1);
    assert!(
        !f.during.is_empty() && f.during.iter().all(|d| d["syn_filter"] == 2),
        "the automatic SYN filter was in force all through the flood: {:?}",
        f.during
    );
    let dropped = f.after["syn_dropped"].as_u64().unwrap_or(0);
    assert!(
        dropped as f64 > 0.9 * f.syns as f64,
        "the filter dropped {dropped} of the flood's {} SYNs ({:.0}/s)",
        f.syns,
        f.syns as f64 / f.seconds
    );
    assert!(
        f.after["syn_sources_proven"].as_u64().unwrap_or(0) >= 1,
        "the clients' address proved real: {}",
        f.after
    );
    assert!(f.seen.ok > 0);
}
