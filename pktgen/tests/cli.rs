//! The `xvs-pktgen` binary as `make bench-instructions` and people run it.

use std::process::Command;

fn pktgen(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xvs-pktgen"))
        .args(args)
        .output()
        .expect("xvs-pktgen runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn memory_forwards_every_packet_of_each_mode_and_method() {
    for (mode, method) in [("established", "dr"), ("new", "nat"), ("udp", "tun")] {
        let (ok, stdout, stderr) = pktgen(&[
            "memory",
            "--mode",
            mode,
            "--method",
            method,
            "--flows",
            "50",
            "--packets",
            "2000",
            "--room",
            "4096",
        ]);
        assert!(ok, "{stderr}");
        assert!(
            stdout.starts_with(&format!(
                "{mode} {method} flows=50 packets=2000 forwarded=2000 dropped=0 "
            )),
            "{stdout}"
        );
    }
}

#[test]
fn memory_refuses_more_new_connections_than_room() {
    let (ok, _, stderr) = pktgen(&[
        "memory",
        "--mode",
        "new",
        "--packets",
        "100",
        "--room",
        "10",
    ]);
    assert!(!ok);
    assert!(stderr.contains("do not fit in --room 10"), "{stderr}");
}

#[test]
fn generate_only_processes_nothing() {
    let (ok, stdout, _) = pktgen(&["memory", "--packets", "1000", "--generate-only"]);
    assert!(ok);
    assert!(stdout.contains("forwarded=0 dropped=0"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let (ok, _, stderr) = pktgen(&["memory", "--size", "63"]);
    assert!(!ok);
    assert!(stderr.contains("64 to 1518, or imix"), "{stderr}");
    let (ok, _, stderr) = pktgen(&["memory", "--method", "fullnat"]);
    assert!(!ok);
    assert!(stderr.contains("dr, nat, tun"), "{stderr}");
}
