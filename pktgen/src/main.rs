//! `xvs-pktgen`: xvs's packet generator. See the crate's README.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use xvs_pktgen::memory::{Director, Method};
use xvs_pktgen::pattern::{FlowSpace, FrameSize, Mode, Pattern};

#[derive(Parser)]
#[command(name = "xvs-pktgen", version, about = "xvs's packet generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Feed a pattern to xvs's pipeline in memory (no sockets): per-packet cost, and the
    /// program `make bench-instructions` runs under callgrind.
    Memory(MemoryArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Memory(args) => memory(&args),
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
    let mut director = Director::new(args.method, 1, (args.flows + args.room) as usize);
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
        "{} {} flows={} packets={} forwarded={forwarded} dropped={dropped} ns_per_packet={:.1}",
        args.mode,
        args.method.name(),
        args.flows,
        args.packets,
        elapsed.as_nanos() as f64 / args.packets.max(1) as f64
    );
    Ok(())
}
