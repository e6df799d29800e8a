//! `xvs`: the XDP Virtual Server daemon.
//!
//! - `xvs run [--config FILE] [--iface IF]... [--queues N] [--cores LIST] [--socket PATH]
//!   [--control-only]` runs in the foreground (see [`xvs_cli::daemon`] for what is wired);
//! - `xvs check --config FILE` validates a file: prints `OK`, or each problem on a line
//!   and exits 1;
//! - `xvs lab [--mode dr|nat|tun] [--scheduler NAME] [--requests N]` runs a seed lab in
//!   network namespaces and prints how many requests each real server answered;
//! - `xvs drain [--undo] [--socket PATH]` withdraws the VIPs a scale-out director announces
//!   (see [`xvs_cli::announce`]), or announces them again;
//! - `xvs realserver start|stop|status --vip ADDR [--mode dr|tun] [--iface IF]...
//!   [--state FILE]` sets a real server up for LVS-DR or LVS-TUN, and undoes it (see
//!   [`xvs_cli::realserver`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xvs_cli::daemon::{self, ControlOnly, RunArgs};
use xvs_cli::forwarding::AfXdpDataplane;
use xvs_cli::lab;
use xvs_cli::realserver::{self, RealServerArgs, RsMode};

#[derive(Debug, Parser)]
#[command(
    name = "xvs",
    version,
    about = "XDP Virtual Server: LVS/IPVS as an AF_XDP forwarder"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the director in the foreground (SIGHUP reloads the file, SIGTERM/SIGINT stop).
    Run(RunCli),
    /// Validate a configuration file: prints OK or what is wrong.
    Check {
        /// The TOML file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a seed lab (client, director, two real servers in network namespaces) and send
    /// HTTP requests through the VIP. Needs root; removes everything it created.
    Lab {
        /// Forwarding method: dr, nat or tun.
        #[arg(long, default_value = "dr")]
        mode: lab::Mode,
        /// Scheduler (ipvsadm name).
        #[arg(long, default_value = "rr")]
        scheduler: String,
        /// HTTP requests to send.
        #[arg(long, default_value_t = 20)]
        requests: u32,
        /// The dual-stack lab, its requests to the IPv6 VIP.
        #[arg(long)]
        ipv6: bool,
        /// Instead: the scale-out lab with N directors (2 or 3) behind a router's ECMP,
        /// announcing the VIP with bird2; 50 conversations survive killing, restarting and
        /// draining one director (needs bird2).
        #[arg(long, value_name = "N")]
        scale_out: Option<usize>,
    },
    /// Scale-out: withdraw this director's announced VIPs (the router moves its flows to the
    /// other directors), or with --undo announce them again. Needs an [announce] section.
    Drain {
        /// Announce the VIPs again.
        #[arg(long)]
        undo: bool,
        /// Control socket (else XVS_SOCKET, /run/xvs/xvs.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Set this host up as an LVS-DR or LVS-TUN real server (the VIP on lo or tunl0, the
    /// ARP sysctls; an IPv6 VIP on lo or ip6tnl0, no sysctls), or undo it: `stop` restores
    /// exactly what `start` changed.
    Realserver {
        /// start, stop or status.
        action: RealserverAction,
        /// The virtual IP the director balances, IPv4 or IPv6.
        // A string, read by `realserver::parse_vip`: garbage is refused with one line.
        #[arg(long)]
        vip: String,
        /// dr (VIP on lo) or tun (VIP on tunl0, needs the kernel's ipip module; for an IPv6
        /// VIP ip6tnl0 and ip6_tunnel).
        #[arg(long, default_value = "dr")]
        mode: RsMode,
        /// Interfaces that get the ARP sysctls (default: every one with an IPv4 address;
        /// an IPv6 VIP needs none).
        #[arg(long = "iface", value_name = "IFACE")]
        ifaces: Vec<String>,
        /// Where start records what it changed (default /run/xvs/realserver-VIP.json).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// The TUN lab's decapsulator on a real server, one tunnel kind each (started by
    /// `xvs lab`).
    #[command(hide = true)]
    LabDecap {
        /// Interface the tunnelled packets arrive on.
        #[arg(long)]
        iface: String,
        /// TUN device to create for the inner packets.
        #[arg(long)]
        tun: String,
        /// Expected outer source (the director); its family is the outer header's.
        #[arg(long)]
        source: std::net::IpAddr,
        /// This real server's address (the outer destination), of the same family.
        #[arg(long)]
        me: std::net::IpAddr,
        /// The inner datagrams' family (default: the outer one's); the other family takes
        /// IPv4-in-IPv6 or IPv6-in-IPv4.
        #[arg(long, value_enum)]
        inner: Option<IpFamily>,
        /// Where to keep the counts.
        #[arg(long)]
        report: PathBuf,
    },
}

/// An address family, for `xvs lab-decap --inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IpFamily {
    Ipv4,
    Ipv6,
}

/// `xvs realserver`'s actions.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RealserverAction {
    /// Apply the VIP and the sysctls, recording the previous values.
    Start,
    /// Restore the previous values and remove what start added.
    Stop,
    /// Show what is applied (exit 0 in place, 1 changed since start, 3 not started).
    Status,
}

#[derive(Debug, Args)]
struct RunCli {
    /// TOML configuration file; without it xvs starts with an empty table for xvsadm.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Interface: once for one arm, twice for external then internal.
    #[arg(long = "iface", value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Queue pairs per interface, one worker each.
    #[arg(long)]
    queues: Option<u32>,
    /// Worker cores, comma-separated.
    #[arg(long, value_delimiter = ',')]
    cores: Option<Vec<usize>>,
    /// Control socket (else XVS_SOCKET, the file's daemon.socket, /run/xvs/xvs.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve xvsadm and reload the file but forward nothing (no AF_XDP, no root needed):
    /// for trying a configuration and for tests.
    #[arg(long)]
    control_only: bool,
    /// Benchmarks only: workers re-address frames toward the real servers and send them,
    /// without the pipeline (the I/O ceiling of `make bench-compare`).
    #[arg(long, hide = true)]
    io_ceiling: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => match xvs_cli::config::load(&config) {
            // Valid by IPVS's rules; the AF_XDP dataplane must also be able to serve it.
            Ok(loaded) => match xvs_dataplane::service::snapshot::check_supported(&loaded.table)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    xvs_cli::forwarding::check_table_memory(loaded.daemon.conn_table_size)
                }) {
                Ok(()) => {
                    for mark in xvs_dataplane::service::marks::unmarked_services(
                        &loaded.table,
                        &loaded.daemon.marks,
                    ) {
                        println!(
                            "{}: warning: fwmark service {mark}: no [[mark]] rule gives mark {mark}, so it receives no traffic",
                            config.display()
                        );
                    }
                    println!("OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("{}: {e}", config.display());
                    ExitCode::FAILURE
                }
            },
            Err(errors) => {
                for line in &errors.0 {
                    println!("{}: {line}", config.display());
                }
                ExitCode::FAILURE
            }
        },
        Cmd::Lab {
            scale_out: Some(n), ..
        } => run_scale_out_lab(n),
        Cmd::Lab {
            mode,
            scheduler,
            requests,
            ipv6,
            scale_out: None,
        } => run_lab(mode, &scheduler, requests, ipv6),
        Cmd::Drain { undo, socket } => {
            let path = xvs_cli::control::socket_path(socket.as_deref(), None);
            let request = xvs_cli::control::Request::Drain { drained: !undo };
            match xvs_cli::control::request(&path, &request) {
                Ok(xvs_cli::control::Reply::Done) => ExitCode::SUCCESS,
                Ok(xvs_cli::control::Reply::Failed { message, .. }) => {
                    eprintln!("xvs drain: {message}");
                    ExitCode::FAILURE
                }
                Ok(other) => {
                    eprintln!("xvs drain: unexpected reply {other:?}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("xvs drain: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Realserver {
            action,
            vip,
            mode,
            ifaces,
            state,
        } => {
            let vip = match realserver::parse_vip(&vip) {
                Ok(vip) => vip,
                Err(e) => {
                    eprintln!("xvs realserver: {e}");
                    // A usage error, as clap's: apart from status's 0, 1 and 3.
                    return ExitCode::from(2);
                }
            };
            let args = RealServerArgs {
                vip,
                mode,
                ifaces,
                state,
            };
            let result = match action {
                RealserverAction::Start => realserver::start(&args).map(|line| (line + "\n", 0)),
                RealserverAction::Stop => realserver::stop(&args).map(|line| (line + "\n", 0)),
                RealserverAction::Status => realserver::status(&args),
            };
            match result {
                Ok((text, code)) => {
                    print!("{text}");
                    ExitCode::from(code)
                }
                Err(e) => {
                    eprintln!("xvs realserver: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::LabDecap {
            iface,
            tun,
            source,
            me,
            inner,
            report,
        } => match lab::decap::run(
            &iface,
            &tun,
            source,
            me,
            inner.map(|f| f == IpFamily::Ipv6),
            &report,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xvs lab-decap: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run(run) => {
            init_tracing();
            let args = RunArgs {
                config: run.config,
                ifaces: run.ifaces,
                queues: run.queues,
                cores: run.cores,
                socket: run.socket,
            };
            let result = if run.control_only {
                daemon::run(args, ControlOnly)
            } else if run.io_ceiling {
                daemon::run(args, AfXdpDataplane::io_ceiling())
            } else {
                daemon::run(args, AfXdpDataplane::default())
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    for line in e.to_string().lines() {
                        tracing::error!("{line}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `xvs lab --scale-out N`: the scale-out lab's exercise, its figures printed.
fn run_scale_out_lab(n: usize) -> ExitCode {
    let programs = match lab::Programs::beside_current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xvs lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("xvs lab: scale-out, {n} directors behind ECMP (bird2 BGP + BFD), mh with sloppy_tcp");
    let result = lab::scaleout::ScaleOutLab::start(lab::scaleout::ScaleOutSetup::mh(n), programs)
        .and_then(|mut lab| lab::scaleout::exercise(&mut lab, 0, 50));
    match result {
        Ok(report) => {
            println!("{report}");
            if report.client.broken().is_empty() && report.client.lost() == 0 {
                ExitCode::SUCCESS
            } else {
                for c in report.client.broken() {
                    println!("broken: {c:?}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xvs lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `xvs lab`: runs the lab, prints the answers per real server and the director's stats.
fn run_lab(mode: lab::Mode, scheduler: &str, requests: u32, ipv6: bool) -> ExitCode {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("xvs lab: cannot install the signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let programs = match lab::Programs::beside_current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xvs lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let family = if ipv6 { ", IPv6" } else { "" };
    println!("xvs lab: {mode} mode{family}, scheduler {scheduler}, {requests} requests");
    match lab::run(mode, scheduler, requests, ipv6, programs, &stop) {
        Ok(report) => {
            for (server, count) in &report.answers {
                println!("{server}: {count}");
            }
            print!("{}", report.stats);
            let answered: u32 = report
                .answers
                .iter()
                .filter(|(k, _)| !k.starts_with('('))
                .map(|(_, v)| v)
                .sum();
            if answered == requests {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xvs lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Colours only on a terminal, so a
/// log file or journal gets plain lines.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
