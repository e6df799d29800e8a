//! `xvsadm`: ipvsadm's language for xvs. The socket client arrives in the next commit.
fn main() {
    eprintln!("xvsadm: the control-socket client is not built yet");
    std::process::exit(2);
}
