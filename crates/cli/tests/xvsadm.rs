//! The `xvsadm` binary against a control server over a real unix socket: the seed labs'
//! command lines, listings byte for byte, `-S | -R`, errors that change nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use xvs_cli::control::ControlServer;
use xvs_cli::director::TableOnlyDirector;

fn xvsadm(socket: &Path, args: &str, stdin: Option<&str>) -> Output {
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
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(socket: &Path, args: &str) -> String {
    let out = xvsadm(socket, args, None);
    assert!(
        out.status.success(),
        "xvsadm {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(socket: &Path, args: &str) -> (String, i32) {
    let out = xvsadm(socket, args, None);
    assert!(!out.status.success(), "xvsadm {args} should fail");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (err.trim_end().to_string(), out.status.code().unwrap())
}

#[test]
fn seed_labs_through_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xvs.sock");
    let server = ControlServer::bind(&socket).unwrap();
    let stop = server.stop_handle();
    let director = Arc::new(Mutex::new(TableOnlyDirector::default()));
    let thread = std::thread::spawn(move || server.serve(director));

    ok(&socket, "-C");
    ok(&socket, "-A -t 172.16.21.10:80 -s rr");
    ok(&socket, "-a -t 172.16.21.10:80 -r 192.168.40.12 -g -w 2");
    ok(&socket, "-a -t 172.16.21.10:80 -r 192.168.40.13 -g -w 1");
    let listing = ok(&socket, "-L -n");
    assert_eq!(
        listing,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  172.16.21.10:80 rr\n\
\x20 -> 192.168.40.12:80             Route   2      0          0         \n\
\x20 -> 192.168.40.13:80             Route   1      0          0         \n"
    );
    assert!(ok(&socket, "-L -n --stats").contains("  -> RemoteAddress:Port\n"));
    assert_eq!(
        ok(&socket, "-L -n --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    ok(&socket, "--set 0 60 0");
    assert_eq!(
        ok(&socket, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 60 300\n"
    );
    assert_eq!(
        ok(&socket, "-L -n -c"),
        "IPVS connection entries\npro expire state       source             virtual            destination\n"
    );
    assert!(ok(&socket, "-L -n -t 172.16.21.10:80").starts_with("Prot LocalAddress"));

    // The NAT seed next to it.
    ok(&socket, "-A -t 192.168.0.11:80 -s lc -p 300");
    ok(&socket, "-a -t 192.168.0.11:80 -r 10.168.0.94:80 -m -w 1");
    ok(&socket, "-a -t 192.168.0.11:80 -r 10.168.0.95:80 -m -w 1");

    // Errors: one line, ipvsadm's words and status, nothing changed.
    let before = ok(&socket, "-S -n");
    assert_eq!(
        refused(&socket, "-A -t 172.16.21.10:80 -s rr"),
        ("Service already exists".to_string(), 255)
    );
    assert_eq!(
        refused(&socket, "-a -t 10.9.9.9:80 -r 10.0.0.1"),
        ("Service not defined".to_string(), 255)
    );
    assert_eq!(
        refused(&socket, "-A -t 1.2.3.4:80 -s fastest"),
        ("Scheduler or persistence engine not found".to_string(), 255)
    );
    assert_eq!(
        refused(&socket, "-a -t 172.16.21.10:80 -r 10.0.0.1 -w x"),
        ("illegal weight specified".to_string(), 2)
    );
    assert_eq!(
        refused(&socket, "-L -t 9.9.9.9:80").0,
        "No such service".to_string()
    );
    assert_eq!(ok(&socket, "-S -n"), before);

    // -S | -C | -R gives the same table back; a bad -R changes nothing.
    ok(&socket, "-C");
    assert_eq!(ok(&socket, "-S -n"), "");
    let out = xvsadm(&socket, "-R", Some(&before));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&socket, "-S -n"), before);
    let bad = format!("{before}-a -t 172.16.21.10:80 -r 192.168.40.12 -g\n");
    let out = xvsadm(&socket, "-R", Some(&bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Service already exists"));
    assert_eq!(ok(&socket, "-S -n"), before);

    // --json carries the same data.
    let json: serde_json::Value = serde_json::from_str(&ok(&socket, "-L -n --json")).unwrap();
    assert_eq!(json["services"].as_array().unwrap().len(), 2);

    stop.stop();
    thread.join().unwrap();
    let (msg, code) = refused(&socket, "-L -n");
    assert!(msg.starts_with("Can't connect to xvs at "), "{msg}");
    assert_eq!(code, 2);
}

/// The seeds' HTTP + HTTPS under one persistent mark: `-f` services and port-less real
/// servers listed, saved and restored as ipvsadm does.
#[test]
fn fwmark_services_through_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xvs.sock");
    let server = ControlServer::bind(&socket).unwrap();
    let stop = server.stop_handle();
    let director = Arc::new(Mutex::new(TableOnlyDirector::default()));
    let thread = std::thread::spawn(move || server.serve(director));

    ok(&socket, "-A -f 1 -s rr -p 300");
    ok(&socket, "-a -f 1 -r 10.0.0.2 -g");
    ok(&socket, "-a -f 1 -r 10.0.0.3:0 -g -w 2");
    assert_eq!(
        ok(&socket, "-L -n"),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
FWM  1 rr persistent 300\n\
\x20 -> 10.0.0.2:0                   Route   1      0          0         \n\
\x20 -> 10.0.0.3:0                   Route   2      0          0         \n"
    );
    let saved = ok(&socket, "-S -n");
    assert_eq!(
        saved,
        "-A -f 1 -s rr -p 300\n-a -f 1 -r 10.0.0.2:0 -g -w 1\n-a -f 1 -r 10.0.0.3:0 -g -w 2\n"
    );
    assert!(ok(&socket, "-L -n -f 1").contains("FWM  1 rr persistent 300\n"));
    assert_eq!(
        refused(&socket, "-a -f 2 -r 10.0.0.2 -g"),
        ("Service not defined".to_string(), 255)
    );

    ok(&socket, "-C");
    let out = xvsadm(&socket, "-R", Some(&saved));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&socket, "-S -n"), saved);

    let json: serde_json::Value = serde_json::from_str(&ok(&socket, "-L -n --json")).unwrap();
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{json}");
    let service = &services[0];
    assert_eq!(service["addr"]["fwmark"]["mark"], 1, "{json}");
    assert_eq!(service["addr"]["fwmark"]["ipv6"], false, "{json}");
    assert_eq!(service["scheduler"], "rr");
    assert_eq!(service["persistence"]["timeout_secs"], 300);
    let dests = service["dests"].as_array().unwrap();
    assert_eq!(dests.len(), 2);
    assert_eq!(
        (&dests[1]["addr"], &dests[1]["port"], &dests[1]["weight"]),
        (&"10.0.0.3".into(), &0.into(), &2.into())
    );

    stop.stop();
    thread.join().unwrap();
}
