//! The `xvs` binary: `check`, and `run` with xvsadm talking to it, SIGHUP reload (a bad
//! file keeps the running table) and SIGTERM stop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xvs_cli::lab::netns::{Namespace, unique_tag};

const DR: &str = include_str!("../examples/dr.toml");
const NAT: &str = include_str!("../examples/nat.toml");

fn xvsadm(socket: &Path, args: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xvsadm"))
        .arg("--socket")
        .arg(socket)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        })
        .into_owned(),
    )
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

/// Polls `f` for up to 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_prints_ok_or_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, DR).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[service]]\ntcp = \"10.0.0.1:80\"\nscheduler = \"nope\"\n[[service.real_server]]\naddress = \"10.0.0.2\"\nweight = 70000\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("service[0]: scheduler: unknown scheduler 'nope'"));
    assert!(lines[1].ends_with("service[0].real_server[0]: illegal weight specified"));
}

#[test]
fn check_refuses_a_table_larger_than_the_machines_memory() {
    let dir = tempfile::tempdir().unwrap();
    let check = |size: u32| {
        let path = dir.path().join(format!("size-{size}.toml"));
        std::fs::write(&path, format!("[daemon]\nconn_table_size = {size}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .map(|kib: u64| kib * 1024)
        .unwrap();
    // 2^26 x 64 entries: about half a terabyte when full.
    let largest = 1 << 26;
    let needed = xvs_conntrack::memory_when_full(largest as usize * 64, 1);
    let (ok, text) = check(largest);
    if needed > total {
        assert!(!ok, "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("daemon.conn_table_size: 67108864 (4294967296 entries) needs")
                && text.contains("GiB when full, more than this machine's"),
            "{text}"
        );
    } else {
        assert!(ok, "{text}");
    }
    // The smallest always fits.
    assert_eq!(check(256), (true, "OK\n".to_string()));
}

#[test]
fn run_reload_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xvs.toml");
    let socket = dir.path().join("xvs.sock");
    std::fs::write(&config, DR).unwrap();
    // The daemon forwards for real: give it the interfaces the example files name (eth0 and
    // eth1, a veth pair) in a namespace of its own, removed when the test ends.
    let ns = Namespace::create(&format!("xvs-{}-run", unique_tag())).unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ns.addr("eth0", "192.168.0.11/24").unwrap();
    ns.addr("eth1", "192.168.40.11/24").unwrap();
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_xvs"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("socket", || xvsadm(&socket, "-L -n").0);

    let (_, saved) = xvsadm(&socket, "-S -n");
    assert_eq!(
        saved,
        "-A -t 172.16.21.10:80 -s rr\n\
-a -t 172.16.21.10:80 -r 192.168.40.12:80 -g -w 2\n\
-a -t 172.16.21.10:80 -r 192.168.40.13:80 -g -w 1\n"
    );
    // xvsadm edits the running table.
    assert!(xvsadm(&socket, "-e -t 172.16.21.10:80 -r 192.168.40.13 -g -w 0").0);
    assert!(
        xvsadm(&socket, "-S -n")
            .1
            .contains("192.168.40.13:80 -g -w 0")
    );

    // SIGHUP with a valid file: its table replaces the running one.
    std::fs::write(&config, NAT).unwrap();
    signal(&child, "HUP");
    eventually("reload", || {
        xvsadm(&socket, "-S -n")
            .1
            .starts_with("-A -t 192.168.0.11:80 -s lc -p 300\n")
    });

    // SIGHUP with a broken file: refused, the NAT table stays.
    std::fs::write(&config, "[[service]]\ntcp = \"bad\"\n").unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        xvsadm(&socket, "-S -n")
            .1
            .starts_with("-A -t 192.168.0.11:80 -s lc -p 300\n")
    );

    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
}

#[test]
fn control_only_starts_empty_for_xvsadm() {
    // No file, no interfaces, no AF_XDP: an empty table that xvsadm fills.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/xvs.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["run", "--control-only", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("socket", || xvsadm(&socket, "-L -n").0);
    assert_eq!(xvsadm(&socket, "-S -n"), (true, String::new()));
    assert!(xvsadm(&socket, "-A -t 10.0.0.1:80 -s rr").0);
    assert!(xvsadm(&socket, "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3").0);
    assert_eq!(
        xvsadm(&socket, "-S -n").1,
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 3\n"
    );
    // SIGHUP without a file changes nothing and keeps running.
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(xvsadm(&socket, "-S -n").1.starts_with("-A -t 10.0.0.1:80"));
    signal(&child, "INT");
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists());
}

/// `xvs check` reads `[[mark]]` rules: good ones pass, a wrong key is named in one line,
/// a fwmark service no rule marks for passes with a warning (IPVS accepts one too).
#[test]
fn check_reads_mark_rules() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let service = "[[service]]\nfwmark = 1\nscheduler = \"rr\"\npersistent = 300\n\
                   [[service.real_server]]\naddress = \"10.0.0.2\"\nmethod = \"dr\"\n";
    let good = format!(
        "[[mark]]\nmark = 1\nprotocol = \"tcp\"\ndestination = \"192.0.2.10\"\nports = [80, \"443-444\"]\n{service}"
    );
    assert_eq!(run("good.toml", &good), (true, "OK\n".to_string()));
    let bad = format!(
        "[[mark]]\nmark = 1\nprotocol = \"tcp\"\ndestination = \"192.0.2.10\"\nports = [\"444-443\"]\n{service}"
    );
    let (ok, text) = run("bad.toml", &bad);
    assert!(!ok, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("mark[0].ports[0]: 444-443 is empty (the first port is higher)"),
        "{text}"
    );
    let (ok, text) = run("unmarked.toml", service);
    assert!(ok, "{text}");
    assert!(
        text.ends_with(
            "unmarked.toml: warning: fwmark service 1: no [[mark]] rule gives mark 1, so it receives no traffic\nOK\n"
        ),
        "{text}"
    );
}
