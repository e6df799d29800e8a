//! Writes the seed corpus: `cargo run --manifest-path fuzz/Cargo.toml --example seeds`
//! (`make fuzz-seeds`). Each target's directory is emptied of seeds first; the files are
//! committed.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let corpora = [
        ("parse", xvs_fuzz::seeds::parse_seeds()),
        ("pipeline", xvs_fuzz::seeds::pipeline_seeds()),
        ("pipeline_sequence", xvs_fuzz::seeds::sequence_seeds()),
    ];
    for (target, seeds) in corpora {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes)?;
        }
        println!("{}: {} seeds", dir.display(), seeds.len());
    }
    Ok(())
}
