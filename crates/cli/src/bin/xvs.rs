//! `xvs`: the daemon. Its subcommands arrive with the config module (next commit).
fn main() {
    eprintln!("xvs: the daemon's subcommands are not built yet");
    std::process::exit(2);
}
