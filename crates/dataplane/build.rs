//! Compiles the XDP filter (bpf/xdp_filter.c) into a BPF object that `xdp` embeds.
//!
//! clang is already needed by libxdp-sys (through xsk's BPF programs), so the filter is C
//! compiled here rather than instructions assembled by hand: the C is readable, and the
//! verifier-facing details (bounds checks, helper calls) stay clang's job. Set `CLANG` to use
//! another compiler binary.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let source = "bpf/xdp_filter.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("xdp_filter.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c", source, "-o",
        ])
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} to build the XDP filter: {e}"));
    assert!(status.success(), "{clang} failed to compile {source}");
}
