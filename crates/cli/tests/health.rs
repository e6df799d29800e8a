//! Health checks end to end: the real `xvs` daemon checks the lab's real servers (python
//! HTTP, HTTPS, UDP servers and an external script) from the director's namespace, while a
//! real client sends requests through the VIP. Needs root, like tests/lab.rs.
//!
//! Each test builds its own lab (removed even when the test fails). Checks run every
//! 0.5 s with small rise and fall counts, so a failure is seen within a second or two;
//! what is asserted is the bound `interval x fall` (plus a fixed slack for listing and
//! publishing), never a speed.

use std::time::{Duration, Instant};

use serde_json::Value;
use xvs_cli::lab::{Lab, Mode, Programs, ServerProgram, UDP_PORT, wait_for};

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

fn lab() -> Lab {
    match Lab::start(Mode::Dr, programs()) {
        Ok(lab) => lab,
        Err(e) => {
            panic!("lab: {e} (these tests need root, ip, ethtool, curl, python3, openssl)")
        }
    }
}

/// Checks every INTERVAL, down after FALL failures, up after RISE passes.
const INTERVAL: f64 = 0.5;
const FALL: u32 = 2;
const RISE: u32 = 2;
/// Each check's time limit, seconds.
const TIMEOUT: f64 = 0.5;
/// What the bound allows beyond `interval x count`: listing through xvsadm every 20 ms,
/// publishing the table, a loaded machine's scheduling.
const SLACK: Duration = Duration::from_millis(1000);

fn rip(lab: &Lab, index: usize) -> String {
    lab.topology.real_servers[index].rip.clone()
}

/// `check` keys with the tests' interval, timeout, rise and fall.
fn timing() -> String {
    format!("interval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = {RISE}\nfall = {FALL}\n")
}

/// A `[[service]]` on VIP:`port` (`proto` tcp or udp), rr, with `keys`, the shared
/// `check` (TOML keys, or empty for none), and real servers `servers` (index, own check).
fn service(
    lab: &Lab,
    proto: &str,
    port: u16,
    keys: &str,
    check: &str,
    servers: &[(usize, &str)],
) -> String {
    let mut text = format!(
        "[[service]]\n{proto} = \"{}:{port}\"\nscheduler = \"rr\"\n{keys}\n",
        lab.topology.vip
    );
    if !check.is_empty() {
        text.push_str(&format!("[service.check]\n{check}\n"));
    }
    for (index, own) in servers {
        text.push_str(&format!(
            "[[service.real_server]]\naddress = \"{}:{port}\"\nmethod = \"dr\"\n",
            rip(lab, *index)
        ));
        if !own.is_empty() {
            text.push_str(&format!("[service.real_server.check]\n{own}\n"));
        }
    }
    text
}

/// The weight `-L -n` lists for real server `rip` (`None`: not listed).
fn weight(lab: &Lab, rip: &str) -> Option<u32> {
    let listing = lab.xvsadm("-L -n").ok()?;
    listing
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("-> {rip}:")))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|w| w.parse().ok())
}

/// Polls `-L -n` until `rip`'s weight is `want`; how long that took.
fn wait_weight(lab: &Lab, rip: &str, want: Option<u32>, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if weight(lab, rip) == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{rip} did not reach weight {want:?} within {limit:?}:\n{}\n{}",
        lab.xvsadm("-L -n").unwrap_or_default(),
        lab.director_log()
    );
}

/// `-L -n --json`: the real server `rip` of the first service, from `dests` or, when its
/// check removed it, from `held_out`.
fn dest_json(lab: &Lab, rip: &str) -> Value {
    let text = lab.xvsadm("-L -n --json").unwrap();
    let data: Value = serde_json::from_str(&text).unwrap();
    let service = &data["services"][0];
    for list in ["dests", "held_out"] {
        if let Some(found) = service[list]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["addr"] == rip))
        {
            return found.clone();
        }
    }
    panic!("{rip} not in {text}");
}

/// Waits until the check of `rip` is `state` (`up`, `down`) in `--json`; its check.
fn wait_check(lab: &Lab, rip: &str, state: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    let found = wait_for(&format!("{rip}'s check to be {state}"), limit, || {
        last = dest_json(lab, rip)["check"].clone();
        last["state"] == state
    });
    if let Err(e) = found {
        panic!("{e}: {last}\n{}", lab.director_log());
    }
    last
}

/// `n` requests through the VIP: who answered each (every one must be answered).
fn answers(lab: &Lab, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match lab.http_get() {
            Ok(body) if !body.is_empty() => body,
            other => panic!("request {i} failed: {other:?}"),
        })
        .collect()
}

/// Rewrites the director's file with `services` and sends SIGHUP; returns once the
/// director logged the reload.
fn reload(lab: &Lab, services: &str) {
    let count = || lab.director_log().matches("reloaded").count();
    let before = count();
    std::fs::write(lab.config_path(), lab.config_text(services)).unwrap();
    lab.signal_director("HUP").unwrap();
    wait_for("the reload", Duration::from_secs(10), || count() > before)
        .unwrap_or_else(|e| panic!("{e}: {}", lab.director_log()));
}

/// Waits until the check of `rip` (restarted by a reload) has passed at least once.
fn wait_passed(lab: &Lab, rip: &str) {
    wait_for(
        &format!("{rip}'s check to pass"),
        Duration::from_secs(10),
        || {
            let check = &dest_json(lab, rip)["check"];
            check["state"] == "up" && check["passed_in_row"].as_u64() >= Some(1)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", dest_json(lab, rip), lab.director_log()));
}

fn interval_times(count: u32) -> Duration {
    Duration::from_secs_f64(INTERVAL * f64::from(count))
}

#[test]
fn a_stopped_web_server_is_quiesced_and_restored_when_it_restarts() {
    // With the metrics endpoint on the director's loopback, to see the check state there.
    let mut lab = Lab::start_with(
        Mode::Dr,
        programs(),
        "[metrics]\nlisten = \"127.0.0.1:9112\"\n",
    )
    .unwrap_or_else(|e| panic!("lab: {e}"));
    let (rs1, rs2) = (rip(&lab, 0), rip(&lab, 1));
    let check = format!("type = \"http\"\n{}", timing());
    let file = service(&lab, "tcp", 80, "", &check, &[(0, ""), (1, "")]);
    lab.reload(&file, &format!("-r {rs2}:80")).unwrap();
    let up = wait_check(&lab, &rs1, "up", Duration::from_secs(5));
    assert_eq!(up["type"], "http");
    assert!(answers(&lab, 4).iter().any(|a| a == "rs1"));

    lab.stop_server(0, ServerProgram::Http).unwrap();
    let took = wait_weight(&lab, &rs1, Some(0), Duration::from_secs(10));
    eprintln!(
        "quiesced {took:?} after the server stopped (interval x fall = {:?})",
        interval_times(FALL)
    );
    assert!(took <= interval_times(FALL) + SLACK, "{took:?}");
    // ipvsadm's text: the quiesced server is listed with weight 0, as IPVS shows it.
    let listing = lab.xvsadm("-L -n").unwrap();
    let line = format!("  -> {:<28} {:<7} {:<6} ", format!("{rs1}:80"), "Route", 0);
    assert!(listing.contains(&line), "{listing}");
    let down = wait_check(&lab, &rs1, "down", Duration::from_secs(1));
    assert_eq!(down["action"], "quiesced");
    let error = down["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused") || error.contains("Connection"),
        "{error}"
    );
    let log = lab.director_log();
    assert!(
        log.contains(&format!(
            "health: TCP  {}:80 -> {rs1}:80 down after {FALL} failed http check(s)",
            lab.topology.vip
        )) && log.contains("quiesced (weight 0)"),
        "{log}"
    );
    // Meanwhile every request is answered, by the other server.
    assert!(answers(&lab, 8).iter().all(|a| a == "rs2"));
    // Prometheus sees the check state per real server.
    let scrape = lab
        .topology
        .director
        .exec(
            "curl",
            &["-s", "--max-time", "3", "http://127.0.0.1:9112/metrics"],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&scrape.stdout);
    let vip = &lab.topology.vip;
    for (rip, up) in [(&rs1, 0), (&rs2, 1)] {
        let line = format!(
            "xvs_backend_up{{local_address=\"{vip}\",local_port=\"80\",remote_address=\"{rip}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}} {up}"
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }

    // A reload of the same file keeps the check's state: no flap.
    reload(&lab, &file);
    assert_eq!(weight(&lab, &rs1), Some(0), "{}", lab.director_log());
    // An operator's (or ldirectord's) weight set meanwhile is the weight restored; the
    // check keeps the server at 0 until it passes.
    lab.xvsadm(&format!(
        "-e -t {}:80 -r {rs1}:80 -g -w 3",
        lab.topology.vip
    ))
    .unwrap();
    assert_eq!(weight(&lab, &rs1), Some(0));
    assert_eq!(dest_json(&lab, &rs1)["check"]["restore_weight"], 3);

    lab.start_server(0, ServerProgram::Http).unwrap();
    let took = wait_weight(&lab, &rs1, Some(3), Duration::from_secs(10));
    eprintln!(
        "restored {took:?} after the server answered again (interval x rise = {:?})",
        interval_times(RISE)
    );
    assert!(took <= interval_times(RISE) + SLACK, "{took:?}");
    assert!(
        lab.director_log().contains(&format!(
            "-> {rs1}:80 up after {RISE} passed http check(s): weight 3 restored"
        )),
        "{}",
        lab.director_log()
    );
    assert!(answers(&lab, 8).iter().any(|a| a == "rs1"));

    // A server the operator (or ldirectord) quiesces stays quiesced while its check passes.
    lab.xvsadm(&format!(
        "-e -t {}:80 -r {rs1}:80 -g -w 0",
        lab.topology.vip
    ))
    .unwrap();
    std::thread::sleep(interval_times(RISE) + SLACK);
    assert_eq!(weight(&lab, &rs1), Some(0));
    assert_eq!(dest_json(&lab, &rs1)["check"]["state"], "up");

    // A server the operator removes is not re-added by its check.
    lab.xvsadm(&format!("-d -t {}:80 -r {rs1}:80", lab.topology.vip))
        .unwrap();
    lab.stop_server(0, ServerProgram::Http).unwrap();
    lab.start_server(0, ServerProgram::Http).unwrap();
    std::thread::sleep(interval_times(RISE + FALL) + SLACK);
    assert_eq!(weight(&lab, &rs1), None);

    // The checks follow the file: without them, the file's table as written.
    let plain = service(&lab, "tcp", 80, "", "", &[(0, ""), (1, "")]);
    lab.reload(&plain, &format!("-r {rs1}:80")).unwrap();
    assert_eq!(weight(&lab, &rs1), Some(1));
    assert!(dest_json(&lab, &rs1)["check"].is_null());
}

#[test]
fn a_removed_server_leaves_the_table_and_the_sorry_server_takes_over() {
    let mut lab = lab();
    let (rs1, rs2) = (rip(&lab, 0), rip(&lab, 1));
    let check = format!("type = \"http\"\ncontains = \"rs1\"\n{}", timing());
    let keys = format!("on_failure = \"remove\"\nsorry_server = \"{rs2}\"");
    let file = service(&lab, "tcp", 80, &keys, &check, &[(0, "")]);
    lab.reload(&file, &format!("-r {rs1}:80")).unwrap();
    wait_check(&lab, &rs1, "up", Duration::from_secs(5));
    assert_eq!(weight(&lab, &rs2), None, "no sorry server while rs1 serves");
    assert!(answers(&lab, 3).iter().all(|a| a == "rs1"));

    lab.stop_server(0, ServerProgram::Http).unwrap();
    let took = wait_weight(&lab, &rs1, None, Duration::from_secs(10));
    eprintln!(
        "removed {took:?} after the server stopped (interval x fall = {:?})",
        interval_times(FALL)
    );
    assert!(took <= interval_times(FALL) + SLACK, "{took:?}");
    assert_eq!(weight(&lab, &rs2), Some(1), "the sorry server is in");
    let sorry = dest_json(&lab, &rs2);
    assert_eq!(sorry["sorry_server"], true, "{sorry}");
    let held = dest_json(&lab, &rs1);
    assert_eq!(
        (&held["check"]["state"], &held["check"]["action"]),
        (&Value::from("down"), &Value::from("removed")),
        "{held}"
    );
    assert!(answers(&lab, 5).iter().all(|a| a == "rs2"));
    assert!(
        lab.director_log()
            .contains(&format!("sorry server {rs2}:80 takes them")),
        "{}",
        lab.director_log()
    );

    lab.start_server(0, ServerProgram::Http).unwrap();
    wait_weight(&lab, &rs1, Some(1), Duration::from_secs(10));
    assert_eq!(
        weight(&lab, &rs2),
        None,
        "remove mode: the sorry server goes"
    );
    assert!(answers(&lab, 3).iter().all(|a| a == "rs1"));
}

/// Makes a real server fail a check.
type Provoke<'a> = Box<dyn Fn() + 'a>;

#[test]
fn status_body_digest_and_timeout_failures_each_take_a_server_down() {
    let lab = lab();
    let rs1 = rip(&lab, 0);
    let site = lab.site(0);
    std::fs::write(site.join("health.html"), "ok\n").unwrap();
    let digest_ok = "eff5bc1ef8ec9d03e640fc4370f5eacd"; // md5("ok\n")
    let health = site.join("health.html");
    let write = |body: &str| std::fs::write(&health, body).unwrap();
    // What each check wants, how its server is made to fail it, and the reason given.
    let cases: Vec<(&str, String, Provoke, &str)> = vec![
        (
            "status",
            "path = \"/health.html\"\nstatus = 200".into(),
            Box::new(|| std::fs::remove_file(&health).unwrap()),
            "status 404, expected 200",
        ),
        (
            "body",
            "path = \"/health.html\"\ncontains = \"ok\"".into(),
            Box::new(|| write("failing\n")),
            "body does not contain \"ok\"",
        ),
        (
            "digest",
            format!("path = \"/health.html\"\ndigest = \"{digest_ok}\""),
            Box::new(|| write("OK\n")),
            "body digest",
        ),
    ];
    for (what, keys, provoke, reason) in cases {
        let own = format!("type = \"http\"\n{keys}\n{}", timing());
        let file = service(&lab, "tcp", 80, "", "", &[(0, &own), (1, "")]);
        reload(&lab, &file);
        wait_passed(&lab, &rs1);
        provoke();
        let start = Instant::now();
        let down = wait_check(&lab, &rs1, "down", Duration::from_secs(10));
        let took = start.elapsed();
        eprintln!("{what} mismatch: down after {took:?}");
        assert!(took <= interval_times(FALL) + SLACK, "{what}: {took:?}");
        let error = down["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{what}: {error}");
        assert_eq!(weight(&lab, &rs1), Some(0));
        assert!(answers(&lab, 4).iter().all(|a| a == "rs2"), "{what}");
        write("ok\n");
        wait_check(&lab, &rs1, "up", Duration::from_secs(10));
        assert_eq!(weight(&lab, &rs1), Some(1));
    }

    // A server that accepts and never answers (stopped: its kernel still completes the
    // handshake) fails by timeout.
    let own = format!("type = \"http\"\n{}", timing());
    let file = service(&lab, "tcp", 80, "", "", &[(0, &own), (1, "")]);
    reload(&lab, &file);
    wait_passed(&lab, &rs1);
    lab.signal_server(0, ServerProgram::Http, "STOP").unwrap();
    let start = Instant::now();
    let down = wait_check(&lab, &rs1, "down", Duration::from_secs(10));
    let took = start.elapsed();
    // The last failed check ends at its timeout, after its start.
    let bound = interval_times(FALL) + Duration::from_secs_f64(TIMEOUT);
    eprintln!("timeout: down after {took:?} (interval x fall + timeout = {bound:?})");
    lab.signal_server(0, ServerProgram::Http, "CONT").unwrap();
    assert!(took <= bound + SLACK, "{took:?}");
    let error = down["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(error.contains("timeout"), "{error}");
    wait_check(&lab, &rs1, "up", Duration::from_secs(10));
}

#[test]
fn https_udp_and_external_checks() {
    let mut lab = lab();
    let (rs1, rs2) = (rip(&lab, 0), rip(&lab, 1));

    // HTTPS with a self-signed certificate: unverified by default; verified against it as
    // a CA file; refused against another certificate.
    let ca = lab.start_https(0, 8443).unwrap();
    let other = lab.start_https(1, 8443).unwrap();
    lab.stop_https(1).unwrap();
    let https = |ca: Option<&std::path::Path>| {
        let ca = ca
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        format!(
            "type = \"https\"\nport = 8443\ncontains = \"rs1\"\n{ca}{}",
            timing()
        )
    };
    for ca in [None, Some(ca.as_path())] {
        let file = service(&lab, "tcp", 80, "", "", &[(0, &https(ca)), (1, "")]);
        reload(&lab, &file);
        wait_passed(&lab, &rs1);
        assert_eq!(dest_json(&lab, &rs1)["check"]["type"], "https");
    }
    let file = service(
        &lab,
        "tcp",
        80,
        "",
        "",
        &[(0, &https(Some(&other))), (1, "")],
    );
    reload(&lab, &file);
    let down = wait_check(&lab, &rs1, "down", Duration::from_secs(10));
    let error = down["last_error"].as_str().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("Issuer"),
        "{error}"
    );
    lab.stop_https(0).unwrap();

    // UDP: a request and an expected reply, per server.
    let udp_check = |name: &str| {
        format!(
            "type = \"udp\"\nsend = \"who\"\nexpect = \"{name}\"\n{}",
            timing()
        )
    };
    let (c1, c2) = (udp_check("rs1"), udp_check("rs2"));
    let file = service(&lab, "udp", UDP_PORT, "", "", &[(0, &c1), (1, &c2)]);
    reload(&lab, &file);
    wait_passed(&lab, &rs1);
    lab.stop_server(0, ServerProgram::Udp).unwrap();
    let down = wait_check(&lab, &rs1, "down", Duration::from_secs(10));
    assert_eq!(down["type"], "udp");
    assert!(
        down["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{down}"
    );
    assert_eq!(weight(&lab, &rs1), Some(0));
    for _ in 0..4 {
        assert_eq!(lab.udp_ask().unwrap(), "rs2");
    }
    lab.start_server(0, ServerProgram::Udp).unwrap();
    wait_check(&lab, &rs1, "up", Duration::from_secs(10));

    // An external command, given the server's address and port; fails while a file
    // named after the address exists.
    let dir = lab.dir().to_path_buf();
    let script = format!(
        "echo \"$@\" >> {dir}/check-args; test ! -e {dir}/down-$1",
        dir = dir.display()
    );
    let external = format!(
        "type = \"external\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}, \"check\"]\n{}",
        timing()
    );
    let file = service(&lab, "tcp", 80, "", &external, &[(0, ""), (1, "")]);
    reload(&lab, &file);
    wait_passed(&lab, &rs1);
    std::fs::write(dir.join(format!("down-{rs1}")), "").unwrap();
    let down = wait_check(&lab, &rs1, "down", Duration::from_secs(10));
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("exit status: 1"),
        "{down}"
    );
    assert_eq!(weight(&lab, &rs1), Some(0));
    assert_eq!(dest_json(&lab, &rs2)["check"]["state"], "up");
    assert!(answers(&lab, 4).iter().all(|a| a == "rs2"));
    std::fs::remove_file(dir.join(format!("down-{rs1}"))).unwrap();
    wait_check(&lab, &rs1, "up", Duration::from_secs(10));
    let args = std::fs::read_to_string(dir.join("check-args")).unwrap();
    assert!(args.lines().any(|l| l == format!("{rs1} 80")), "{args}");
    assert!(args.lines().any(|l| l == format!("{rs2} 80")), "{args}");
}

#[test]
fn connections_stuck_in_syn_recv_make_a_server_suspect_and_quiesce_it() {
    let mut lab = lab();
    let (rs1, rs2) = (rip(&lab, 0), rip(&lab, 1));
    let passive =
        "[service.passive_check]\nsyn_recv = 1\nmin_stuck = 1\nquiesce = true\nhold = 60\n";
    let file = service(&lab, "tcp", 80, passive, "", &[(0, ""), (1, "")]);
    lab.reload(&file, &format!("-r {rs2}:80")).unwrap();
    assert!(answers(&lab, 4).iter().any(|a| a == "rs1"));
    // No active check: rs1's listener goes away; in DR its kernel resets the client
    // directly, so the director only ever sees the SYNs.
    lab.stop_server(0, ServerProgram::Http).unwrap();
    let failed = (0..4).filter(|_| lab.http_get().is_err()).count();
    assert!(failed >= 1, "rr sent some requests to the stopped server");
    wait_weight(&lab, &rs1, Some(0), Duration::from_secs(10));
    let passive = &dest_json(&lab, &rs1)["passive"];
    assert_eq!(
        (&passive["suspect"], &passive["quiesced"]),
        (&Value::from(true), &Value::from(true)),
        "{passive}"
    );
    assert_eq!(passive["times_suspected"], 1);
    assert!(
        lab.director_log()
            .contains(&format!("-> {rs1}:80 suspect: ")),
        "{}",
        lab.director_log()
    );
    assert!(answers(&lab, 6).iter().all(|a| a == "rs2"));
    assert_eq!(dest_json(&lab, &rs2)["passive"]["suspect"], false);
}
