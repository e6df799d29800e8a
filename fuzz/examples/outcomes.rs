//! What a corpus reaches: runs every input of `corpus/<target>` (or the directories given)
//! through the `pipeline` or `pipeline_sequence` target and prints the frames sent and the
//! count of each drop and refusal reason, summed over the inputs.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example outcomes -- pipeline [DIR...]`

use std::sync::atomic::Ordering::Relaxed;

use xvs_dataplane::pipeline::counters::Drop;
use xvs_forwarders::Reason;
use xvs_fuzz::lab::{MAX_WORKERS, process_counters};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "pipeline".into());
    let run: fn(&[u8]) = match target.as_str() {
        "pipeline" => xvs_fuzz::targets::pipeline,
        "pipeline_sequence" => xvs_fuzz::targets::pipeline_sequence,
        other => panic!("no target {other} (pipeline, pipeline_sequence)"),
    };
    let mut dirs: Vec<String> = args.collect();
    if dirs.is_empty() {
        dirs.push(format!("{}/corpus/{target}", env!("CARGO_MANIFEST_DIR")));
    }
    let mut inputs = 0;
    for dir in &dirs {
        for entry in std::fs::read_dir(dir)? {
            run(&std::fs::read(entry?.path())?);
            inputs += 1;
        }
    }
    let sum = |f: &dyn Fn(&xvs_dataplane::pipeline::counters::WorkerCounters) -> u64| {
        (0..MAX_WORKERS)
            .map(|i| f(&process_counters(i)))
            .sum::<u64>()
    };
    println!("{inputs} inputs");
    println!("rx_frames {}", sum(&|c| c.rx_frames.load(Relaxed)));
    println!("tx_frames {}", sum(&|c| c.tx_frames.load(Relaxed)));
    println!("icmp_sent {}", sum(&|c| c.icmp_sent.load(Relaxed)));
    for why in Drop::ALL {
        println!("drop {:24} {}", why.name(), sum(&|c| c.drops_of(why)));
    }
    for reason in Reason::ALL {
        println!(
            "refused {:21} {}",
            reason.name(),
            sum(&|c| c.refused_of(reason))
        );
    }
    Ok(())
}
