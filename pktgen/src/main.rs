//! `xvs-pktgen`: xvs's packet generator. See the crate's README.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use xvs_dataplane::netdev::NetDev;
use xvs_pktgen::compare::{self, CompareOptions};
use xvs_pktgen::frame::Addressing;
use xvs_pktgen::memory::{Director, Method};
use xvs_pktgen::pattern::{FlowSpace, FrameSize, Mode, Pattern};
use xvs_pktgen::tcp;
use xvs_pktgen::wire::{ListenSpec, Listener, SendOptions, Sender};

#[derive(Parser)]
#[command(name = "xvs-pktgen", version, about = "xvs's packet generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a pattern over AF_XDP, optionally counting what arrives at the real servers.
    Send(SendArgs),
    /// xvs against nftables DNAT in the lab's NAT topology (`make bench-compare`; root).
    Compare(CompareArgs),
    /// Connect and close TCP connections as fast as possible; connections per second.
    Cps(CpsArgs),
    /// Accept TCP connections and close them (the real servers of `cps`).
    TcpSink(SinkArgs),
    /// Answer every HTTP request with N bytes (the real servers of `compare`'s bulk download).
    HttpBytes(HttpBytesArgs),
    /// Feed a pattern to xvs's pipeline in memory (no sockets): per-packet cost, and the
    /// program `make bench-instructions` runs under callgrind.
    Memory(MemoryArgs),
}

#[derive(Args)]
struct SendArgs {
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Destination MAC: the director's interface (or the router toward it).
    #[arg(long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source MAC (default: the interface's).
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Destination address (the VIP).
    #[arg(long)]
    dst: Ipv4Addr,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// established (SYN once per flow, then ACKs), new (a SYN from a fresh port every
    /// packet) or udp.
    #[arg(long, default_value = "udp")]
    mode: Mode,
    /// Flows (established, udp).
    #[arg(long, default_value_t = 1024)]
    flows: u64,
    /// First client address; flows take 64512 ports from each address in turn.
    #[arg(long)]
    src: Ipv4Addr,
    /// Client addresses at most (new flows wrap after addresses × 64512).
    #[arg(long, default_value_t = 1)]
    addresses: u32,
    /// Frame size on the wire: 64 to 1518, or imix.
    #[arg(long, default_value = "64")]
    size: FrameSize,
    /// Packets per second (k and M suffixes); 0 or absent: as fast as possible.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    rate: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Count (and time) what arrives at `[NETNS:]IFACE:ADDR[+ADDR...]`; repeat per real server.
    #[arg(long)]
    listen: Vec<ListenSpec>,
    /// Print the summary as JSON (live lines still go to stderr).
    #[arg(long)]
    json: bool,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// Rounds per forwarder, alternating xvs, its I/O ceiling and the kernel (0: none).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// UDP flows.
    #[arg(long, default_value_t = 1024)]
    flows: u64,
    /// Seconds of the connections-per-second test per forwarder (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    cps_seconds: f64,
    /// Connecting threads of the connections-per-second test.
    #[arg(long, default_value_t = 16)]
    cps_threads: usize,
    /// Packets per second of the latency test (listening at the real servers; 0 skips it).
    #[arg(long, default_value = "50k", value_parser = parse_rate)]
    latency_rate: u64,
    /// Bulk HTTP downloads per forwarder, alternating (0 skips them).
    #[arg(long, default_value_t = 3)]
    bulk_rounds: u32,
    /// MiB of each bulk download.
    #[arg(long, default_value_t = 64)]
    bulk_mib: u64,
    /// Niceness of the xvs daemon. The kernel's forwarding runs in softirq, ahead of every
    /// process on its CPU; -20 gives xvs's worker a similar precedence over other work on a
    /// shared machine (0, the default: time-shared like any process).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    xvs_nice: i32,
    /// The xvs workers' own nice value (the daemon's `[daemon] worker_nice`): the precedence
    /// of `--xvs-nice` for the worker threads alone, the control plane left as it is.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    xvs_worker_nice: i32,
    /// The xvs binary (default: beside this program).
    #[arg(long)]
    xvs: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CpsArgs {
    /// Where to connect: ADDR:PORT (the VIP).
    #[arg(long)]
    target: SocketAddrV4,
    /// Seconds to run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Connecting threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SinkArgs {
    /// Port to accept on.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Accepting threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args)]
struct HttpBytesArgs {
    /// Port to accept on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Bytes of each response body.
    #[arg(long, default_value_t = 64 << 20)]
    bytes: u64,
}

#[derive(Args)]
struct MemoryArgs {
    /// established, new or udp.
    #[arg(long, default_value = "established")]
    mode: Mode,
    /// dr, nat or tun.
    #[arg(long, default_value = "dr")]
    method: Method,
    /// Flows (established, udp).
    #[arg(long, default_value_t = 10_000)]
    flows: u64,
    /// Connection table entries beyond the flows: room for the connections `new` creates.
    /// Fixed rather than derived from --packets, so runs of different lengths do the same
    /// setup work (callgrind differences then cancel it exactly).
    #[arg(long, default_value_t = 1 << 20)]
    room: u64,
    /// Packets to measure after the flows are open.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Frame size on the wire, 64 to 1518, or imix.
    #[arg(long, default_value = "64")]
    size: FrameSize,
    /// Only write the frames, do not process them (the generator's own cost, to subtract).
    #[arg(long)]
    generate_only: bool,
    /// IPv6 clients, service and real servers instead of IPv4 ones.
    #[arg(long)]
    ipv6: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Memory(args) => memory(&args),
        Command::Send(args) => send(&args),
        Command::Compare(args) => compare(&args),
        Command::Cps(args) => cps(&args),
        Command::TcpSink(args) => tcp::sink(args.port, args.threads).map_err(|e| e.to_string()),
        Command::HttpBytes(args) => {
            tcp::http_bytes(args.port, args.bytes).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvs-pktgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn memory(args: &MemoryArgs) -> Result<(), String> {
    if args.mode == Mode::New && args.packets > args.room {
        return Err(format!(
            "{} new connections do not fit in --room {}",
            args.packets, args.room
        ));
    }
    let entries = (args.flows + args.room) as usize;
    let mut director = if args.ipv6 {
        Director::new_ipv6(args.method, 1, entries)
    } else {
        Director::new(args.method, 1, entries)
    };
    let space = FlowSpace::from(Director::client_base(0), 4096);
    let mut pattern = Pattern::new(
        args.mode,
        args.flows,
        space,
        args.size,
        &director.addressing(),
    );
    let worker = director.worker();
    let opened = worker.open(&mut pattern);
    if opened.dropped > 0 {
        return Err(format!(
            "opening the flows dropped {} packets",
            opened.dropped
        ));
    }
    let started = Instant::now();
    let (forwarded, dropped) = if args.generate_only {
        let mut buf = vec![0u8; 2048];
        let mut bytes = 0u64;
        for _ in 0..args.packets {
            bytes += pattern.write_next(&mut buf, 0) as u64;
        }
        std::hint::black_box(bytes);
        (0, 0)
    } else {
        let tally = worker.send(&mut pattern, args.packets);
        (tally.forwarded, tally.dropped)
    };
    let elapsed = started.elapsed();
    println!(
        "{} {}{} flows={} packets={} forwarded={forwarded} dropped={dropped} ns_per_packet={:.1}",
        args.mode,
        args.method.name(),
        if args.ipv6 { " ipv6" } else { "" },
        args.flows,
        args.packets,
        elapsed.as_nanos() as f64 / args.packets.max(1) as f64
    );
    Ok(())
}

fn send(args: &SendArgs) -> Result<(), String> {
    let src_mac = match args.src_mac {
        Some(mac) => mac,
        None => {
            NetDev::by_name(&args.iface)
                .map_err(|e| format!("{}: {e}", args.iface))?
                .mac
        }
    };
    let addressing = Addressing {
        src_mac,
        dst_mac: args.dst_mac,
        dst: args.dst,
        dst_port: args.port,
        ipv6: None,
    };
    let space = FlowSpace::from(args.src, args.addresses);
    let mut pattern = Pattern::new(args.mode, args.flows, space, args.size, &addressing);
    let mut listeners = Vec::new();
    for spec in &args.listen {
        listeners.push(Listener::start(spec)?);
    }
    let mut sender = Sender::open(&args.iface)?;
    if args.mode == Mode::Established {
        let syns = sender.open_flows(&pattern, Duration::from_millis(300));
        if !args.quiet {
            eprintln!("opened {syns} flows");
        }
    }
    let options = SendOptions {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        live: !args.quiet,
    };
    let mut summary = sender.run(&mut pattern, &options, listeners)?;
    summary.traffic = format!(
        "{} {} flows, frames {}, rate {}",
        args.mode,
        pattern.flows(),
        args.size,
        if args.rate == 0 {
            "max".to_string()
        } else {
            format!("{} pps", args.rate)
        }
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

fn compare(args: &CompareArgs) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let dir = me.parent().map(PathBuf::from).unwrap_or_default();
    let xvs = args.xvs.clone().unwrap_or_else(|| dir.join("xvs"));
    let options = CompareOptions {
        rounds: args.rounds,
        seconds: args.seconds,
        flows: args.flows,
        cps_seconds: args.cps_seconds,
        cps_threads: args.cps_threads.max(1),
        latency_rate: args.latency_rate,
        bulk_rounds: args.bulk_rounds,
        bulk_mib: args.bulk_mib.max(1),
        xvsadm: xvs.with_file_name("xvsadm"),
        xvs,
        pktgen: me,
        xvs_nice: args.xvs_nice,
        xvs_worker_nice: args.xvs_worker_nice,
        client_cpu: 0,
        forwarder_cpu: if cpus() > 1 { 1 } else { 0 },
    };
    // Ctrl-C or SIGTERM: the run stops at the next step and removes what it built (the
    // namespaces, nft table and processes) instead of dying with them in place.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    let result =
        compare::run(options.clone(), &stop, |line| eprintln!("{line}")).map_err(|e| e.0)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", result.to_text(&options));
    }
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn cps(args: &CpsArgs) -> Result<(), String> {
    let result = tcp::connect_close(
        args.target,
        Duration::from_secs_f64(args.duration.max(0.0)),
        args.threads,
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&result).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} connections in {:.2} s: {:.0} per second ({} failed)",
            result.connections, result.seconds, result.per_second, result.failures
        );
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("MAC '{s}': {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("MAC '{s}': six bytes"))
}

/// `250000`, `250k`, `1.5M`.
fn parse_rate(s: &str) -> Result<u64, String> {
    let (number, scale) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        _ => (s, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|r| *r >= 0.0)
        .map(|r| (r * scale) as u64)
        .ok_or_else(|| format!("rate '{s}': packets per second, e.g. 250k or 1.5M"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_rates_parse() {
        assert_eq!(parse_mac("02:0d:00:00:00:ff"), Ok([2, 0xd, 0, 0, 0, 0xff]));
        assert!(parse_mac("02:0d:00:00:00").is_err());
        assert!(parse_mac("zz:0d:00:00:00:00").is_err());
        assert_eq!(parse_rate("250000"), Ok(250_000));
        assert_eq!(parse_rate("250k"), Ok(250_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1").is_err());
    }
}
