//! The `xvs` daemon (`--control-only`, no root needed) against mistakes: a socket path that
//! is a file, services the dataplane cannot serve, reloads of empty, binary or mistyped
//! files, and a restore too long for one request. Each refusal is one line and changes
//! nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DR: &str = include_str!("../examples/dr.toml");

fn xvsadm(socket: &Path, args: &str, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xvsadm"))
        .arg("--socket")
        .arg(socket)
        .args(args.split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn saved(socket: &Path) -> String {
    let out = xvsadm(socket, "-S -n", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one line xvsadm refused with.
fn refused(out: &Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_string()
}

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

/// A control-only daemon with its log in `dir/log`; stopped (SIGTERM) on drop.
struct Daemon {
    child: Child,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: Option<&Path>) -> Daemon {
        let socket = dir.join("xvs.sock");
        let log = dir.join("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xvs"));
        cmd.args(["run", "--control-only", "--socket"]).arg(&socket);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon { child, socket, log };
        eventually("socket", || {
            xvsadm(&daemon.socket, "-L -n", None).status.success()
        });
        daemon
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGHUP and waits for the reload's outcome, the `n`-th reload line.
    fn reload(&self, n: usize) -> String {
        self.hup();
        let mut line = String::new();
        eventually("the reload's log line", || {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("reload refused") || l.contains("reloaded"))
                .collect();
            match lines.get(n) {
                Some(l) => {
                    line = l.to_string();
                    true
                }
                None => false,
            }
        });
        line
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn a_socket_path_that_is_a_regular_file_stops_xvs_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "do not delete\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["run", "--control-only", "--socket"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "control socket {}: the path exists and is a regular file, not a socket: refusing to replace it",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "do not delete\n");
}

#[test]
fn control_only_refuses_what_the_real_daemon_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), None);
    let socket = &daemon.socket;
    assert!(
        xvsadm(socket, "-A -t 10.0.0.1:80 -s rr", None)
            .status
            .success()
    );
    // Fwmark services of both families are served (by the config file's [[mark]] rules).
    assert!(xvsadm(socket, "-A -f 7 -s rr", None).status.success());
    assert!(xvsadm(socket, "-A -f 8 -6", None).status.success());
    assert!(
        xvsadm(socket, "-A -t [2001:db8::10]:80", None)
            .status
            .success(),
        "IPv6 services are served"
    );
    assert_eq!(
        saved(socket),
        "-A -t 10.0.0.1:80 -s rr\n-A -t [2001:db8::10]:80 -s wlc\n-A -f 7 -s rr\n-A -f 8 -6 -s wlc\n"
    );
}

#[test]
fn reloads_of_empty_binary_or_mistyped_files_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xvs.toml");
    std::fs::write(&config, DR).unwrap();
    let daemon = Daemon::start(dir.path(), Some(&config));
    let dr = saved(&daemon.socket);
    assert!(dr.starts_with("-A -t 172.16.21.10:80 -s rr\n"), "{dr}");

    let cases: [(&[u8], &str); 5] = [
        (
            b"",
            "the file is empty: a reload would remove every service; write `service = []` to mean no services",
        ),
        (
            b"[daemon]\ninterface = \"eth1\"\n",
            "the file has no [[service]]: a reload would remove the 1 running service(s)",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x1b[2J",
            "not a text file: line 1 holds a byte that is not UTF-8 (0x89)",
        ),
        (
            b"[[service]]\ntcp = \"172.16.21.10:80\"\n[[service.real_server]]\naddress = \"192.168.40.12\"\nweight = \"5\"\n",
            "service[0].real_server[0].weight: illegal weight specified: string \"5\" is not allowed (a number from 0 to 65535)",
        ),
        (
            b"[[service]]\ntcp = \"172.16.21.10:80\"\npersistent = \"yes\"\n",
            "service[0].persistent: invalid timeout value specified: string \"yes\" is not allowed (true, false or seconds from 1 to 2678400)",
        ),
    ];
    for (n, (text, why)) in cases.iter().enumerate() {
        std::fs::write(&config, text).unwrap();
        let line = daemon.reload(n);
        assert!(
            line.contains("reload refused") && line.contains(why),
            "{line} / {why}"
        );
        assert_eq!(saved(&daemon.socket), dr, "unchanged after {why}");
    }
    let log = daemon.log();
    assert!(!log.contains('\u{1b}') && !log.contains("IHDR"), "{log}");

    // Said explicitly, no services is what the operator gets.
    std::fs::write(&config, "service = []\n[daemon]\ninterface = \"eth1\"\n").unwrap();
    let line = daemon.reload(cases.len());
    assert!(line.contains("reloaded"), "{line}");
    assert_eq!(saved(&daemon.socket), "");
}

#[test]
fn a_restore_longer_than_one_request_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), None);
    assert!(
        xvsadm(&daemon.socket, "-A -t 10.0.0.1:80 -s rr", None)
            .status
            .success()
    );
    // 300,000 services: about 70 MiB as one request, over the 64 MiB xvs reads at once.
    let mut rules = String::new();
    for i in 0..300_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        rules.push_str(&format!("-A -t 10.{a}.{b}.{c}:81 -s rr\n"));
    }
    let out = xvsadm(&daemon.socket, "-R", Some(rules.as_bytes()));
    let line = refused(&out);
    assert!(
        line.starts_with("the request is ")
            && line.ends_with(
                "MiB, more than the 64 MiB xvs reads in one request (for -R: restore the rules in parts)"
            ),
        "{line}"
    );
    assert_eq!(saved(&daemon.socket), "-A -t 10.0.0.1:80 -s rr\n");
}

/// IPv6 services beside IPv4 ones, from the config file and from xvsadm: listed as ipvsadm
/// lists them (bracketed addresses, `mask 64` for an IPv6 prefix), saved, restored, and in
/// the JSON listing.
#[test]
fn ipv6_services_load_list_save_and_restore_beside_ipv4_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xvs.toml");
    std::fs::write(
        &config,
        "[[service]]\ntcp = \"[2001:db8::10]:80\"\nscheduler = \"rr\"\n\
         [[service.real_server]]\naddress = \"2001:db8::2\"\nmethod = \"dr\"\n\
         [[service.real_server]]\naddress = \"[fd00::3]:8080\"\nmethod = \"nat\"\nweight = 2\n\
         [[service]]\ntcp = \"10.0.0.1:80\"\nscheduler = \"rr\"\n\
         [[service.real_server]]\naddress = \"10.0.0.2\"\nmethod = \"dr\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), Some(&config));
    let socket = &daemon.socket;
    for line in [
        "-A -u [2001:db8::10]:53 -s sh -p 600 -M 64",
        "-a -u [2001:db8::10]:53 -r [2001:db8::4]:53 -i",
    ] {
        let out = xvsadm(socket, line, None);
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = xvsadm(socket, "-L -n", None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n\
         \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.0.0.1:80 rr\n\
         \x20 -> 10.0.0.2:80                  Route   1      0          0         \n\
         TCP  [2001:db8::10]:80 rr\n\
         \x20 -> [2001:db8::2]:80             Route   1      0          0         \n\
         \x20 -> [fd00::3]:8080               Masq    2      0          0         \n\
         UDP  [2001:db8::10]:53 sh persistent 600 mask 64\n\
         \x20 -> [2001:db8::4]:53             Tunnel  1      0          0         \n"
    );
    let rules = saved(socket);
    assert_eq!(
        rules,
        "-A -t 10.0.0.1:80 -s rr\n\
         -a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n\
         -A -t [2001:db8::10]:80 -s rr\n\
         -a -t [2001:db8::10]:80 -r [2001:db8::2]:80 -g -w 1\n\
         -a -t [2001:db8::10]:80 -r [fd00::3]:8080 -m -w 2\n\
         -A -u [2001:db8::10]:53 -s sh -p 600 -M 64\n\
         -a -u [2001:db8::10]:53 -r [2001:db8::4]:53 -i -w 1 --tun-type ipip\n"
    );
    assert!(xvsadm(socket, "-C", None).status.success());
    assert_eq!(saved(socket), "");
    assert!(
        xvsadm(socket, "-R", Some(rules.as_bytes()))
            .status
            .success()
    );
    assert_eq!(saved(socket), rules, "-S | -R round trip");
    let json = String::from_utf8(xvsadm(socket, "-L -n --json", None).stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let addrs: Vec<&str> = value["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addr"]["inet"]["addr"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.0.0.1", "2001:db8::10", "2001:db8::10"]);
    // A mixed-family real server of a non-tunnel method is refused in one line.
    assert_eq!(
        refused(&xvsadm(
            socket,
            "-a -t [2001:db8::10]:80 -r 10.0.0.9:80 -g",
            None
        )),
        "Different address family is allowed only for tunneling servers"
    );
}
