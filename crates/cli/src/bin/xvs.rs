//! `xvs`: the XDP Virtual Server daemon.
//!
//! - `xvs run [--config FILE] [--iface IF]... [--queues N] [--cores LIST] [--socket PATH]`
//!   runs in the foreground (see [`xvs_cli::daemon`] for what is wired);
//! - `xvs check --config FILE` validates a file: prints `OK`, or each problem on a line
//!   and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xvs_cli::daemon::{self, ControlOnly, RunArgs};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => match xvs_cli::config::load(&config) {
            Ok(_) => {
                println!("OK");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for line in &errors.0 {
                    println!("{}: {line}", config.display());
                }
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
            match daemon::run(args, ControlOnly) {
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

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
