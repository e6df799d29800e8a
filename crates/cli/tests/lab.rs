//! End to end: the real `xvs` daemon on real AF_XDP sockets between network namespaces, with
//! real kernel TCP and UDP clients and servers, exactly as in the seed labs. Needs root.
//!
//! Each test builds its own lab (uniquely named namespaces, removed even when the test
//! fails) and drives it with the seed's own ipvsadm lines through `xvsadm`.

use xvs_cli::lab::decap::Tunnel;
use xvs_cli::lab::{HTTP_PORT, LINES_PORT, Lab, Mode, Programs, RealServerSetup, UDP_PORT};

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

fn lab(mode: Mode) -> Lab {
    match Lab::start(mode, programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {mode}: {e} (these tests need root, ip, ethtool, curl, python3)"),
    }
}

/// `n` HTTP requests, each a new connection: the answering servers in order.
fn gets(lab: &Lab, n: usize) -> Vec<String> {
    (0..n).map(|_| lab.http_get().unwrap()).collect()
}

fn udp_asks(lab: &Lab, n: usize) -> Vec<String> {
    (0..n).map(|_| lab.udp_ask().unwrap()).collect()
}

fn alternates(answers: &[String]) -> bool {
    answers.len() >= 2
        && answers[0] != answers[1]
        && answers.iter().all(|a| a == "rs1" || a == "rs2")
        && answers.windows(2).all(|w| w[0] != w[1])
}

#[test]
fn dr_round_robin_alternates_over_tcp_and_udp() {
    let lab = lab(Mode::Dr);
    lab.add_service("-t", HTTP_PORT, "rr", None, &[1, 1])
        .unwrap();
    lab.add_service("-u", UDP_PORT, "rr", None, &[1, 1])
        .unwrap();
    let http = gets(&lab, 6);
    assert!(alternates(&http), "rr over HTTP: {http:?}");
    // The real servers were set up as an operator would, with `xvs realserver start`.
    let setup = RealServerSetup::new(&programs().xvs, lab.dir());
    for rs in &lab.topology.real_servers {
        let state = setup.state_file(&rs.name);
        let args = [
            "realserver",
            "status",
            "--vip",
            &lab.topology.vip,
            "--state",
            state.to_str().unwrap(),
        ];
        // Exit 0: started and in place.
        let status = rs.ns.exec(env!("CARGO_BIN_EXE_xvs"), &args).unwrap();
        let shown = String::from_utf8_lossy(&status.stdout);
        assert!(shown.contains("(dr): started"), "{shown}");
    }
    let udp = udp_asks(&lab, 4);
    assert!(alternates(&udp), "rr over UDP: {udp:?}");
    // The stats count what went through: 6 connections over TCP, one entry per datagram
    // source port over UDP.
    let stats = lab.xvsadm("-L -n --stats").unwrap();
    let tcp_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    assert_eq!(tcp_line.split_whitespace().nth(2), Some("6"), "{stats}");
    let conns = lab.xvsadm("-L -n -c").unwrap();
    assert!(conns.lines().any(|l| l.starts_with("UDP")), "{conns}");
    // What IPVS refuses is refused in one line and changes nothing: a NAT real server of
    // the other family.
    let before = lab.xvsadm("-S -n").unwrap();
    let edit = format!("-a -t {}:80 -r [2001:db8::2]:80 -m", lab.topology.vip);
    let refused = lab.xvsadm(&edit).unwrap_err().to_string();
    assert!(
        refused.contains("Different address family is allowed only for tunneling servers"),
        "{refused}"
    );
    assert_eq!(lab.xvsadm("-S -n").unwrap(), before);
    // The port runs in copy mode on veth (veth refuses zero-copy), native XDP.
    let dataplane = lab.xvsadm("--dataplane").unwrap();
    let port = dataplane.lines().nth(1).unwrap_or_default();
    assert!(
        port.starts_with("eth0") && port.contains(" copy "),
        "{dataplane}"
    );
    // The sync daemons start and stop with ipvsadm's own lines and list in its format.
    assert_eq!(lab.xvsadm("-L --daemon").unwrap(), "");
    lab.xvsadm("--start-daemon master --mcast-interface eth0 --syncid 5")
        .unwrap();
    let again = lab.xvsadm("--start-daemon master").unwrap_err().to_string();
    assert!(again.ends_with("Daemon has already run"), "{again}");
    lab.xvsadm("--start-daemon backup --syncid 5 --mcast-port 8849")
        .unwrap();
    assert_eq!(
        lab.xvsadm("-L --daemon").unwrap(),
        "master sync daemon (mcast=eth0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
         backup sync daemon (mcast=eth0, syncid=5, maxlen=1472, group=224.0.0.81, port=8849, ttl=1)\n"
    );
    let json = lab.xvsadm("-L --daemon --json").unwrap();
    assert!(
        json.contains("\"messages_sent\"") && json.contains("\"port\": 8849"),
        "{json}"
    );
    assert!(
        lab.xvsadm("--dataplane")
            .unwrap()
            .contains("Sync: master and backup")
    );
    lab.xvsadm("--stop-daemon master").unwrap();
    lab.xvsadm("--stop-daemon backup").unwrap();
    assert_eq!(lab.xvsadm("-L --daemon").unwrap(), "");
    let none = lab.xvsadm("--stop-daemon backup").unwrap_err().to_string();
    assert!(none.ends_with("No daemon is running"), "{none}");
}

#[test]
fn nat_weighted_round_robin_follows_the_weights_both_ways() {
    let lab = lab(Mode::Nat);
    lab.add_service("-t", HTTP_PORT, "wrr", None, &[3, 1])
        .unwrap();
    lab.add_service("-u", UDP_PORT, "wrr", None, &[1, 3])
        .unwrap();
    let http = gets(&lab, 8);
    assert_eq!(http.iter().filter(|a| *a == "rs1").count(), 6, "{http:?}");
    assert_eq!(http.iter().filter(|a| *a == "rs2").count(), 2, "{http:?}");
    let udp = udp_asks(&lab, 4);
    assert_eq!(udp.iter().filter(|a| *a == "rs2").count(), 3, "{udp:?}");
    // NAT: the replies came back through the director and were counted out.
    let stats = lab.xvsadm("-L -n --stats").unwrap();
    let tcp_line = stats.lines().find(|l| l.starts_with("TCP")).unwrap();
    let out_pkts: u64 = tcp_line.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(out_pkts >= 8, "{stats}");
    // The director's own connection to a NAT real server's service port gets its replies:
    // they are addressed to the director, so the XDP filter leaves them to the kernel.
    let own = lab
        .topology
        .director
        .exec("curl", &["-s", "--max-time", "3", "http://10.168.0.94:80/"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "rs1");
}

#[test]
fn tun_delivers_through_ipip_with_correct_outer_headers() {
    let lab = lab(Mode::Tun);
    lab.add_service("-t", HTTP_PORT, "rr", None, &[1, 1])
        .unwrap();
    lab.add_service("-u", UDP_PORT, "rr", None, &[1, 1])
        .unwrap();
    let http = gets(&lab, 8);
    assert!(alternates(&http), "{http:?}");
    let udp = udp_asks(&lab, 2);
    assert!(alternates(&udp), "{udp:?}");
    for rs in 0..2 {
        let report = lab.decap_report(rs, Tunnel::Ipip);
        assert!(report.decapsulated >= 10, "rs{}: {report:?}", rs + 1);
        assert_eq!(report.bad_outer, 0, "rs{}: {report:?}", rs + 1);
    }
}

#[test]
fn persistence_keeps_a_client_on_one_server() {
    let lab = lab(Mode::Dr);
    lab.add_service("-t", HTTP_PORT, "rr", Some(60), &[1, 1])
        .unwrap();
    let http = gets(&lab, 6);
    assert!(
        http.iter().all(|a| *a == http[0]) && !http[0].is_empty(),
        "{http:?}"
    );
    let listing = lab.xvsadm("-L -n --persistent-conn").unwrap();
    assert!(listing.contains("persistent 60"), "{listing}");
    let conns = lab.xvsadm("-L -n -c").unwrap();
    assert!(
        conns.lines().any(|l| l.contains("NONE")),
        "the template is listed: {conns}"
    );
}

#[test]
fn a_long_lived_connection_survives_a_reload_that_adds_a_server() {
    let lab = lab(Mode::Nat);
    let service = format!("[[service]]\ntcp = \"192.168.0.11:{LINES_PORT}\"\nscheduler = \"rr\"\n");
    let server = |rip: &str| {
        format!("\n[[service.real_server]]\naddress = \"{rip}:{LINES_PORT}\"\nmethod = \"nat\"\n")
    };
    let one = format!("{service}{}", server("10.168.0.94"));
    lab.reload(&one, &format!("-r 10.168.0.94:{LINES_PORT}"))
        .unwrap();
    let mut session = lab.open_session().unwrap();
    assert_eq!(session.ask("before").unwrap(), "rs1: before");
    let two = format!("{one}{}", server("10.168.0.95"));
    lab.reload(&two, &format!("-r 10.168.0.95:{LINES_PORT}"))
        .unwrap();
    assert_eq!(
        session.ask("after").unwrap(),
        "rs1: after",
        "the connection kept its server"
    );
    // New connections use the added server too.
    let mut others: Vec<String> = Vec::new();
    for _ in 0..2 {
        let mut s = lab.open_session().unwrap();
        others.push(s.ask("new").unwrap());
    }
    assert!(others.iter().any(|a| a == "rs2: new"), "{others:?}");
    assert_eq!(session.ask("still").unwrap(), "rs1: still");
}

#[test]
fn weight_zero_lets_connections_finish_and_sends_new_ones_elsewhere() {
    let lab = lab(Mode::Dr);
    lab.add_service("-t", LINES_PORT, "rr", None, &[1, 1])
        .unwrap();
    let mut session = lab.open_session().unwrap();
    let first = session.ask("hello").unwrap();
    let (name, rip) = if first.starts_with("rs1") {
        ("rs1", "192.168.40.12")
    } else {
        ("rs2", "192.168.40.13")
    };
    // Its connection is live: changing its forwarding method is refused and changes nothing.
    let refused = lab
        .xvsadm(&format!(
            "-e -t 172.16.21.10:{LINES_PORT} -r {rip}:{LINES_PORT} -i -w 1"
        ))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("forwarding method"), "{refused}");
    lab.xvsadm(&format!(
        "-e -t 172.16.21.10:{LINES_PORT} -r {rip}:{LINES_PORT} -g -w 0"
    ))
    .unwrap();
    for i in 0..3 {
        assert_eq!(
            session.ask(&format!("more{i}")).unwrap(),
            format!("{name}: more{i}")
        );
    }
    for _ in 0..3 {
        let mut fresh = lab.open_session().unwrap();
        let answer = fresh.ask("new").unwrap();
        assert!(
            !answer.starts_with(name),
            "a quiesced server got a new connection: {answer}"
        );
    }
}

#[test]
fn removing_a_real_server_ends_its_flows() {
    let lab = lab(Mode::Dr);
    lab.add_service("-t", LINES_PORT, "rr", None, &[1, 1])
        .unwrap();
    let mut session = lab.open_session().unwrap();
    let first = session.ask("hello").unwrap();
    let rip = if first.starts_with("rs1") {
        "192.168.40.12"
    } else {
        "192.168.40.13"
    };
    lab.xvsadm(&format!(
        "-d -t 172.16.21.10:{LINES_PORT} -r {rip}:{LINES_PORT}"
    ))
    .unwrap();
    // expire_nodest_conn is off (IPVS's default): the flow's packets are dropped, so the
    // client's next request goes unanswered.
    assert!(session.ask("anyone?").is_err());
    let dataplane = lab.xvsadm("--dataplane").unwrap();
    assert!(
        dataplane
            .lines()
            .any(|l| l.trim_start().starts_with("dest_removed")),
        "{dataplane}"
    );
    // New connections go to the remaining server.
    let mut fresh = lab.open_session().unwrap();
    let answer = fresh.ask("new").unwrap();
    assert!(!answer.starts_with(&first[..3]), "{answer}");
}

/// A process in a lab namespace, killed when the test ends (passed or not).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_local_real_server_is_served_by_the_directors_own_kernel() {
    let lab = lab(Mode::Dr);
    // The director's own web server (on every address, as a local real server listens).
    let site = lab.dir().join("director-site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "director\n").unwrap();
    let _web = Killed(
        lab.topology
            .director
            .command(xvs_cli::lab::servers::python())
            .args([
                "-m",
                "http.server",
                "80",
                "--bind",
                "0.0.0.0",
                "--directory",
            ])
            .arg(&site)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    xvs_cli::lab::wait_for(
        "the director's web server",
        std::time::Duration::from_secs(10),
        || {
            lab.topology
                .director
                .exec("curl", &["-s", "--max-time", "1", "http://127.0.0.1:80/"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "director")
        },
    )
    .unwrap();
    let vip = &lab.topology.vip;
    lab.xvsadm(&format!("-A -t {vip}:80 -s rr")).unwrap();
    lab.xvsadm(&format!("-a -t {vip}:80 -r 192.168.40.12 -g"))
        .unwrap();
    let tun = || {
        lab.topology
            .director
            .ip(&["link", "show", "xvslocal0"])
            .is_ok()
    };
    assert!(!tun(), "no TUN device while no real server is local");
    // 192.168.40.11 is the director's own address: IPVS's Local.
    lab.xvsadm(&format!("-a -t {vip}:80 -r 192.168.40.11 -g"))
        .unwrap();
    assert!(
        tun(),
        "the TUN device opens with the first local real server"
    );
    let listing = lab.xvsadm("-L -n").unwrap();
    assert!(
        listing.contains("  -> 192.168.40.11:80             Local   1      "),
        "{listing}"
    );
    assert!(
        lab.xvsadm("-S -n")
            .unwrap()
            .contains("-r 192.168.40.11:80 -g -w 1"),
        "saved as ipvsadm saves a local server"
    );
    let answers = gets(&lab, 6);
    assert!(
        answers.iter().filter(|a| *a == "director").count() == 3
            && answers.iter().filter(|a| *a == "rs1").count() == 3,
        "rr over rs1 and the director itself: {answers:?}"
    );
    let dataplane = lab.xvsadm("--dataplane").unwrap();
    let local: u64 = dataplane
        .lines()
        .find_map(|l| l.strip_prefix("Frames: "))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        local >= 9,
        "3 connections' packets went to the kernel: {dataplane}"
    );
}

/// The nice value (field 19 of `stat`) of each of `pid`'s threads, by thread name.
fn thread_nices(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        threads.push((name.trim().to_string(), nice));
    }
    threads
}

#[test]
fn worker_nice_raises_the_workers_alone_and_they_still_forward() {
    let lab = match Lab::start_with(Mode::Dr, programs(), "worker_nice = -5\n") {
        Ok(lab) => lab,
        Err(e) => panic!("lab: {e} (these tests need root, ip, ethtool, curl, python3)"),
    };
    lab.add_service("-t", HTTP_PORT, "rr", None, &[1, 1])
        .unwrap();
    let http = gets(&lab, 4);
    assert!(alternates(&http), "rr over HTTP: {http:?}");
    let threads = thread_nices(lab.director_pid().unwrap());
    let workers: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("xvs-worker-"))
        .collect();
    assert!(!workers.is_empty(), "{threads:?}");
    assert!(workers.iter().all(|(_, nice)| *nice == -5), "{threads:?}");
    // The control plane, health checks and the rest keep the process's own nice value.
    assert!(
        threads
            .iter()
            .filter(|(name, _)| !name.starts_with("xvs-worker-"))
            .all(|(_, nice)| *nice == 0),
        "{threads:?}"
    );
}
