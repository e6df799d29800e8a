//! End to end: the director's Prometheus endpoint, scraped with curl inside the director's
//! namespace while the seed DR lab carries traffic, and checked against what `xvsadm`
//! lists at the same moment. Needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use xvs_cli::lab::{
    Children, Conversation, HTTP_PORT, LINES_PORT, Lab, Mode, Programs, UDP_PORT, wait_for,
};

const LISTEN: &str = "127.0.0.1:9111";

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus's text format (0.0.4), checking that every sample's family was
/// declared with `# HELP` and `# TYPE` before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counters end in _total: {line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
        };
        assert!(
            typed.contains(name) && helped.contains(name),
            "{name} has no HELP/TYPE before its samples"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("value of {line}")),
        });
    }
    samples
}

/// `a="x",b=""` (the values here never hold quotes or backslashes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap();
        let (value, after) = after.split_once('"').unwrap();
        labels.insert(key.to_string(), value.to_string());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

/// The one value of `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

fn scrape(lab: &Lab) -> String {
    let url = format!("http://{LISTEN}/metrics");
    let out = lab
        .topology
        .director
        .exec("curl", &["-s", "--fail", "--max-time", "5", &url])
        .expect("curl the metrics endpoint");
    String::from_utf8(out.stdout).unwrap()
}

/// A service or real-server line of `xvsadm -L -n ...`: the address and its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// `TCP  172.16.21.10:80 ...`: protocol, address, port, the other columns.
    Service(String, String, String, Vec<String>),
    /// `  -> 192.168.40.12:80 ...`: address, port, the other columns.
    Server(String, String, Vec<String>),
}

/// The lines after the header of an `-L -n` listing, each real server after its service.
fn listing(text: &str) -> Vec<Line> {
    let split = |addr: &str| {
        let (a, p) = addr.rsplit_once(':').unwrap();
        (a.to_string(), p.to_string())
    };
    text.lines()
        .skip(3)
        .map(|l| {
            let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            if words[0] == "->" {
                let (a, p) = split(&words[1]);
                Line::Server(a, p, words[2..].to_vec())
            } else {
                let (a, p) = split(&words[1]);
                Line::Service(words[0].clone(), a, p, words[2..].to_vec())
            }
        })
        .collect()
}

/// The numbers the test compares, from xvsadm: `-L -n --stats --exact`, `-L -n`,
/// `--dataplane` and the count of `-L -n -c`.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    stats: Vec<Line>,
    table: Vec<Line>,
    dataplane: String,
    entries: usize,
}

fn listed(lab: &Lab) -> Listed {
    Listed {
        stats: listing(&lab.xvsadm("-L -n --stats --exact").unwrap()),
        table: listing(&lab.xvsadm("-L -n").unwrap()),
        dataplane: lab.xvsadm("--dataplane").unwrap(),
        entries: lab.xvsadm("-L -n -c").unwrap().lines().count() - 2,
    }
}

/// xvsadm's numbers and a scrape taken between two identical listings: the same moment.
fn at_one_moment(lab: &Lab) -> (Listed, Vec<Sample>) {
    for _ in 0..5 {
        let before = listed(lab);
        let samples = parse(&scrape(lab));
        if listed(lab) == before {
            return (before, samples);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the listings never settled once the traffic stopped");
}

const STATS_NAMES: [&str; 5] = [
    "connections",
    "incoming_packets",
    "outgoing_packets",
    "incoming_bytes",
    "outgoing_bytes",
];

#[test]
fn scrape_matches_xvsadm_during_and_after_lab_traffic() {
    let extra = format!("[metrics]\nlisten = \"{LISTEN}\"\n");
    let lab = Lab::start_with(Mode::Dr, programs(), &extra)
        .unwrap_or_else(|e| panic!("lab: {e} (needs root, ip, ethtool, curl, python3)"));
    lab.add_service("-t", HTTP_PORT, "rr", None, &[2, 1])
        .unwrap();
    lab.add_service("-t", LINES_PORT, "rr", None, &[1, 1])
        .unwrap();
    lab.add_service("-u", UDP_PORT, "rr", None, &[1, 1])
        .unwrap();

    // During traffic: a conversation sends a line every 50 ms while HTTP requests and UDP
    // datagrams go through; every scrape parses and the totals keep growing.
    let conversation = Conversation::start(
        &lab.topology.client,
        &lab.topology.vip,
        Duration::from_secs(3),
    )
    .unwrap();
    conversation
        .wait_answered(1, Duration::from_secs(5))
        .unwrap();
    let mut last_packets = -1.0;
    for _ in 0..4 {
        for _ in 0..3 {
            assert!(!lab.http_get().unwrap().is_empty());
        }
        assert!(!lab.udp_ask().unwrap().is_empty());
        let samples = parse(&scrape(&lab));
        let packets = value(&samples, "node_ipvs_incoming_packets_total", &[]);
        assert!(packets > last_packets, "{packets} after {last_packets}");
        last_packets = packets;
    }
    let report = conversation.finish().unwrap();
    assert!(report.connected && report.missing == 0, "{report:?}");
    // A quiesced UDP service drops what comes for it, by reason.
    let vip = &lab.topology.vip;
    for rs in &lab.topology.real_servers {
        lab.xvsadm(&format!(
            "-e -u {vip}:{UDP_PORT} -r {}:{UDP_PORT} -w 0",
            rs.rip
        ))
        .unwrap();
    }
    assert_eq!(lab.udp_ask().unwrap(), "", "no real server may take it");
    // One connection stays open: an ActiveConn that does not move.
    let mut session = lab.open_session().unwrap();
    assert!(session.ask("hello").unwrap().ends_with("hello"));

    // Traffic stopped: the scrape says what xvsadm says.
    let (listed, samples) = at_one_moment(&lab);
    let mut totals = [0.0; 5];
    let mut backends = 0;
    let mut service = (String::new(), String::new(), String::new());
    for (stats, table) in listed.stats.iter().zip(&listed.table) {
        match (stats, table) {
            (Line::Service(proto, addr, port, columns), Line::Service(..)) => {
                service = (proto.clone(), addr.clone(), port.clone());
                let labels = [
                    ("proto", proto.as_str()),
                    ("local_address", addr.as_str()),
                    ("local_port", port.as_str()),
                    ("local_mark", ""),
                ];
                for (i, name) in STATS_NAMES.iter().enumerate() {
                    let listed: f64 = columns[i].parse().unwrap();
                    totals[i] += listed;
                    let metric = format!("xvs_service_{name}_total");
                    assert_eq!(
                        value(&samples, &metric, &labels),
                        listed,
                        "{metric} {labels:?}"
                    );
                }
            }
            (Line::Server(addr, port, columns), Line::Server(_, _, table_columns)) => {
                backends += 1;
                let (proto, vip, vport) = &service;
                let labels = [
                    ("proto", proto.as_str()),
                    ("local_address", vip.as_str()),
                    ("local_port", vport.as_str()),
                    ("remote_address", addr.as_str()),
                    ("remote_port", port.as_str()),
                    ("local_mark", ""),
                ];
                for (i, name) in STATS_NAMES.iter().enumerate() {
                    let metric = format!("xvs_backend_{name}_total");
                    let listed: f64 = columns[i].parse().unwrap();
                    assert_eq!(
                        value(&samples, &metric, &labels),
                        listed,
                        "{metric} {labels:?}"
                    );
                }
                // -L -n: Forward Weight ActiveConn InActConn.
                for (metric, column) in [
                    ("node_ipvs_backend_weight", 1),
                    ("node_ipvs_backend_connections_active", 2),
                    ("node_ipvs_backend_connections_inactive", 3),
                ] {
                    let listed: f64 = table_columns[column].parse().unwrap();
                    assert_eq!(
                        value(&samples, metric, &labels),
                        listed,
                        "{metric} {labels:?}"
                    );
                }
            }
            other => panic!("the two listings disagree: {other:?}"),
        }
    }
    assert_eq!(backends, 6);
    for name in [
        "node_ipvs_backend_weight",
        "node_ipvs_backend_connections_active",
        "node_ipvs_backend_connections_inactive",
    ] {
        assert_eq!(samples.iter().filter(|s| s.name == name).count(), backends);
    }
    // The totals are the director's (nothing was removed, so the services' sums).
    for (i, name) in STATS_NAMES.iter().enumerate() {
        let metric = format!("node_ipvs_{name}_total");
        assert_eq!(value(&samples, &metric, &[]), totals[i], "{metric}");
    }
    assert_eq!(
        totals[0],
        12.0 + 4.0 + 2.0,
        "12 HTTP, 4 UDP, 2 line connections"
    );
    let active: f64 = samples
        .iter()
        .filter(|s| s.name == "node_ipvs_backend_connections_active")
        .map(|s| s.value)
        .sum();
    assert_eq!(active, 1.0, "the open session");

    // The dataplane's own numbers, as --dataplane and -c show them.
    let frames = listed
        .dataplane
        .lines()
        .find_map(|l| l.strip_prefix("Frames: "))
        .unwrap();
    let words: Vec<&str> = frames.split_whitespace().collect();
    let sum = |name: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(
        sum("xvs_worker_rx_frames_total"),
        words[1].parse::<f64>().unwrap()
    );
    assert_eq!(
        sum("xvs_worker_tx_frames_total"),
        words[3].parse::<f64>().unwrap()
    );
    // Every received frame came in some batch: at least one batch, at most one per frame.
    let batches = sum("xvs_worker_rx_batches_total");
    assert!(
        batches >= 1.0 && batches <= sum("xvs_worker_rx_frames_total"),
        "{batches}"
    );
    assert!(sum("xvs_worker_rx_frames_total") >= totals[1]);
    let drops_listed: Vec<(String, f64)> = listed
        .dataplane
        .lines()
        .skip_while(|l| !l.starts_with("Drops:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let (reason, n) = l.trim().split_once(' ').unwrap();
            (reason.to_string(), n.trim().parse().unwrap())
        })
        .collect();
    for (reason, n) in &drops_listed {
        assert_eq!(
            value(&samples, "xvs_drops_total", &[("reason", reason)]),
            *n
        );
    }
    assert!(
        value(
            &samples,
            "xvs_drops_total",
            &[("reason", "no_dest_available")]
        ) >= 1.0,
        "{drops_listed:?}"
    );
    let nonzero_drops = samples
        .iter()
        .filter(|s| s.name == "xvs_drops_total" && s.value > 0.0)
        .count();
    assert_eq!(nonzero_drops, drops_listed.len());
    assert_eq!(value(&samples, "xvs_worker_up", &[("worker", "0")]), 1.0);
    assert_eq!(
        value(
            &samples,
            "xvs_port_info",
            &[("iface", "eth0"), ("queue", "0"), ("af_xdp", "copy")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "xvs_port_tx_ring_full_total",
            &[("iface", "eth0")]
        ),
        0.0
    );
    assert_eq!(
        value(&samples, "xvs_conntrack_entries", &[]),
        listed.entries as f64
    );
    assert_eq!(
        value(&samples, "xvs_conntrack_capacity", &[]),
        (4096 * 64) as f64
    );
    assert_eq!(
        value(&samples, "xvs_sync_daemon_running", &[("role", "master")]),
        0.0
    );

    // node_exporter itself, reading a /proc/net/ip_vs written from the same listing, says
    // exactly what xvs says: the dashboards see no difference.
    let theirs = node_ipvs(&node_exporter(&lab, &listed));
    assert_eq!(
        theirs.0.len(),
        2 * 8,
        "HELP and TYPE of node_exporter's 8 IPVS metrics"
    );
    assert_eq!(theirs.1.len(), 5 + 3 * backends, "{theirs:#?}");
    assert_eq!(node_ipvs(&scrape(&lab)), theirs);

    // -Z zeroes the counters the endpoint shows, as it zeroes the kernel's.
    lab.xvsadm("-Z").unwrap();
    let zeroed = parse(&scrape(&lab));
    assert_eq!(value(&zeroed, "node_ipvs_connections_total", &[]), 0.0);
    drop(session);
}

/// `/proc/net/ip_vs` as the kernel writes it (`ip_vs_info_seq_show`) for an `-L -n` listing.
fn proc_ip_vs(table: &[Line]) -> String {
    let hex = |addr: &str, port: &str| {
        let ip: std::net::Ipv4Addr = addr.parse().unwrap();
        format!("{:08X}:{:04X}", u32::from(ip), port.parse::<u16>().unwrap())
    };
    let mut out = String::from(
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
    );
    for line in table {
        match line {
            Line::Service(proto, addr, port, columns) => {
                out.push_str(&format!("{proto}  {} {} \n", hex(addr, port), columns[0]))
            }
            Line::Server(addr, port, c) => out.push_str(&format!(
                "  -> {}      {:<7} {:<6} {:<10} {:<10}\n",
                hex(addr, port),
                c[0],
                c[1],
                c[2],
                c[3]
            )),
        }
    }
    out
}

/// `/proc/net/ip_vs_stats` (`ip_vs_stats_show`) for the totals of an `--stats` listing.
fn proc_ip_vs_stats(stats: &[Line]) -> String {
    let mut totals = [0u64; 5];
    for line in stats {
        if let Line::Service(_, _, _, columns) = line {
            for (total, column) in totals.iter_mut().zip(columns) {
                *total += column.parse::<u64>().unwrap();
            }
        }
    }
    let [c, ip, op, ib, ob] = totals;
    format!(
        "   Total Incoming Outgoing         Incoming         Outgoing\n   \
         Conns  Packets  Packets            Bytes            Bytes\n\
         {c:8X} {ip:8X} {op:8X} {ib:16X} {ob:16X}\n\n \
         Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n\
         {:8X} {:8X} {:8X} {:16X} {:16X}\n",
        0, 0, 0, 0, 0
    )
}

/// Debian's node_exporter (Makefile's DEB_PACKAGES), run with only its IPVS collector on a
/// proc directory holding `listed`, inside the director's namespace; its scrape.
fn node_exporter(lab: &Lab, listed: &Listed) -> String {
    const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
    assert!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing: install prometheus-node-exporter (make deps)"
    );
    let proc = tempfile::tempdir().unwrap();
    std::fs::create_dir(proc.path().join("net")).unwrap();
    std::fs::write(proc.path().join("net/ip_vs"), proc_ip_vs(&listed.table)).unwrap();
    std::fs::write(
        proc.path().join("net/ip_vs_stats"),
        proc_ip_vs_stats(&listed.stats),
    )
    .unwrap();
    let listen = "127.0.0.1:9100";
    let mut command = lab.topology.director.command(NODE_EXPORTER);
    command
        .arg(format!("--path.procfs={}", proc.path().display()))
        .args(["--collector.disable-defaults", "--collector.ipvs"])
        .arg(format!("--web.listen-address={listen}"));
    let mut children = Children::default();
    children
        .spawn(command, &proc.path().join("node_exporter.log"))
        .unwrap();
    let url = format!("http://{listen}/metrics");
    let mut text = String::new();
    wait_for("node_exporter", Duration::from_secs(10), || {
        match lab.topology.director.exec("curl", &["-s", "--fail", &url]) {
            Ok(out) => {
                text = String::from_utf8_lossy(&out.stdout).into_owned();
                true
            }
            Err(_) => false,
        }
    })
    .unwrap();
    text
}

/// The `node_ipvs_*` part of a scrape: HELP and TYPE lines, and the samples, in a fixed
/// order (node_exporter sorts families and labels by name, xvs keeps its own order).
fn node_ipvs(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let ipvs: Vec<&str> = text
        .lines()
        .filter(|l| {
            ["node_ipvs_", "# HELP node_ipvs_", "# TYPE node_ipvs_"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let comments = ipvs
        .iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.to_string())
        .collect();
    let mut samples: Vec<String> = parse(&ipvs.join("\n"))
        .into_iter()
        .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
        .collect();
    samples.sort();
    (comments, samples)
}

#[test]
fn a_metrics_address_in_use_stops_the_director_with_one_line() {
    // The control-only daemon needs no namespace: bind a loopback port first, then ask
    // xvs to listen on it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xvs.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"{addr}\"\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["run", "--control-only", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("xvs.sock"))
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("metrics.listen {addr}: Address already in use")),
        "{stderr}"
    );
    assert!(!dir.path().join("xvs.sock").exists(), "nothing started");
}
