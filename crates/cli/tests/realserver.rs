//! End to end: `xvs realserver start|status|stop` in a fresh network namespace, every
//! sysctl and address checked before, during and after; for an IPv6 VIP also that it takes
//! connections routed to it and is not answered for in neighbour discovery. Needs root.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use xvs_cli::lab::netns::{self, unique_tag};
use xvs_cli::lab::{Namespace, servers, wait_for};

const VIP: &str = "172.16.21.10";
const XVS: &str = env!("CARGO_BIN_EXE_xvs");

/// A namespace with `eth0` (a veth whose peer stays inside) holding 192.168.40.12/24.
fn real_server_namespace() -> Namespace {
    let ns = Namespace::create(&format!("xvs-{}-rs", unique_tag()))
        .unwrap_or_else(|e| panic!("{e} (this test needs root and ip)"));
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ns.addr("eth0", "192.168.40.12/24").unwrap();
    ns
}

/// `xvs realserver ARGS` inside `ns` (its status, stdout and stderr as they are).
fn realserver(ns: &Namespace, args: &[&str]) -> Output {
    ns.command(XVS)
        .arg("realserver")
        .args(args)
        .output()
        .expect("run xvs realserver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sysctls DR touches, as `sysctl -n` reads them in `ns`.
const DR_SYSCTLS: [&str; 6] = [
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.lo.arp_announce",
    "net.ipv4.conf.eth0.arp_ignore",
    "net.ipv4.conf.eth0.arp_announce",
];

fn sysctl(ns: &Namespace, key: &str) -> String {
    text(&ns.exec("sysctl", &["-n", key]).unwrap().stdout)
        .trim()
        .to_string()
}

fn sysctls(ns: &Namespace, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| sysctl(ns, k)).collect()
}

/// `ip -4 -o addr show dev DEV` in `ns`.
fn addresses(ns: &Namespace, dev: &str) -> String {
    text(
        &ns.ip(&["-4", "-o", "addr", "show", "dev", dev])
            .unwrap()
            .stdout,
    )
}

#[test]
fn dr_start_status_stop_restores_every_previous_value() {
    let ns = real_server_namespace();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs1.json");
    let state_arg = state.to_str().unwrap();
    let args = ["--vip", VIP, "--state", state_arg];
    // Values other than the kernel's defaults, to see that stop puts back these.
    ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "2").unwrap();
    ns.sysctl("net.ipv4.conf.eth0.arp_announce", "1").unwrap();
    let before = sysctls(&ns, &DR_SYSCTLS);
    assert_eq!(before[4..], ["2", "1"]);
    let lo_before = addresses(&ns, "lo");
    assert!(!lo_before.contains(VIP));

    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(3), "not started yet");
    assert!(text(&status.stdout).starts_with(&format!("{VIP} (dr): not started")));

    let start = realserver(&ns, &[&["start"][..], &args].concat());
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert_eq!(
        text(&start.stdout),
        format!("{VIP} (dr) started: 7 change(s) recorded in {state_arg}\n")
    );
    assert_eq!(sysctls(&ns, &DR_SYSCTLS), ["1", "2", "1", "2", "1", "2"]);
    let lo = addresses(&ns, "lo");
    assert!(lo.contains(&format!("inet {VIP}/32")), "{lo}");
    assert!(lo.contains("lo:0"), "the seeds' alias label: {lo}");

    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(0));
    let shown = text(&status.stdout);
    assert!(shown.starts_with(&format!("{VIP} (dr): started, state {state_arg}\n")));
    assert!(
        shown.contains("  sysctl   net.ipv4.conf.eth0.arp_ignore            1        was 2\n"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "  address  {VIP}/32 dev lo                   present  added by xvs\n"
        )),
        "{shown}"
    );

    // A second start changes nothing and keeps the first record.
    let recorded = std::fs::read_to_string(&state).unwrap();
    let again = realserver(&ns, &[&["start"][..], &args].concat());
    assert!(again.status.success());
    assert_eq!(
        text(&again.stdout),
        format!("{VIP} (dr) already started; nothing changed\n")
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // Changed by hand since: status says so, a start puts it back, the record stays.
    ns.sysctl("net.ipv4.conf.all.arp_ignore", "0").unwrap();
    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status.stdout).contains("CHANGED since start"));
    let fix = realserver(&ns, &[&["start"][..], &args].concat());
    assert_eq!(
        text(&fix.stdout),
        format!("{VIP} (dr) already started; 1 setting(s) put back\n")
    );
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // Another mode on top is refused with one line and changes nothing.
    let tun = realserver(&ns, &[&["start", "--mode", "tun"][..], &args].concat());
    assert_eq!(tun.status.code(), Some(1));
    let refusal = text(&tun.stderr);
    assert_eq!(refusal.lines().count(), 1, "{refusal}");
    assert!(
        refusal.starts_with(&format!("xvs realserver: {VIP} is already set up for dr")),
        "{refusal}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // The state is this namespace's: elsewhere it is refused, not applied.
    let elsewhere = std::process::Command::new(XVS)
        .args(["realserver", "status"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(text(&elsewhere.stderr).contains("was written in network namespace"));

    let stop = realserver(&ns, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(
        text(&stop.stdout),
        format!("{VIP} (dr) stopped: 7 change(s) undone\n")
    );
    assert_eq!(
        sysctls(&ns, &DR_SYSCTLS),
        before,
        "every previous value back"
    );
    assert_eq!(addresses(&ns, "lo"), lo_before);
    assert!(!state.exists());
    let twice = realserver(&ns, &[&["stop"][..], &args].concat());
    assert_eq!(twice.status.code(), Some(1));
    assert_eq!(
        text(&twice.stderr),
        format!("xvs realserver: {VIP} is not started: no state file {state_arg}\n")
    );
}

#[test]
fn stop_leaves_what_was_there_before_start() {
    let ns = real_server_namespace();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs.json");
    let args = [
        "--vip",
        VIP,
        "--iface",
        "eth0",
        "--state",
        state.to_str().unwrap(),
    ];
    // An operator's own VIP on lo and half the sysctls already set.
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .unwrap();
    ns.sysctl("net.ipv4.conf.all.arp_ignore", "1").unwrap();
    let before = sysctls(&ns, &DR_SYSCTLS);
    let start = realserver(&ns, &[&["start"][..], &args].concat());
    assert!(start.status.success(), "{}", text(&start.stderr));
    let status = text(&realserver(&ns, &[&["status"][..], &args].concat()).stdout);
    assert!(status.contains("present  found"), "{status}");
    let stop = realserver(&ns, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(
        addresses(&ns, "lo").contains(&format!("inet {VIP}/32")),
        "kept"
    );
    assert_eq!(sysctls(&ns, &DR_SYSCTLS), before);
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_ignore"), "1");
}

#[test]
fn tun_needs_the_ipip_module_and_without_it_changes_nothing() {
    let ns = real_server_namespace();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs.json");
    let args = [
        "--vip",
        VIP,
        "--mode",
        "tun",
        "--state",
        state.to_str().unwrap(),
    ];
    let keys = [
        &DR_SYSCTLS[..],
        &[
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ],
    ]
    .concat();
    let before = sysctls(&ns, &keys);
    let links_before = text(&ns.ip(&["-o", "link", "show"]).unwrap().stdout);
    let start = realserver(&ns, &[&["start"][..], &args].concat());
    if !Path::new("/sys/module/ipip").exists() {
        // This machine's kernel: refused with one line naming the module, nothing changed.
        assert_eq!(start.status.code(), Some(1));
        let refusal = text(&start.stderr);
        assert_eq!(refusal.lines().count(), 1, "{refusal}");
        assert!(
            refusal.starts_with(
                "xvs realserver: --mode tun needs the kernel's ipip module for tunl0, and this kernel has none ("
            ),
            "{refusal}"
        );
        assert_eq!(sysctls(&ns, &keys), before);
        assert_eq!(
            text(&ns.ip(&["-o", "link", "show"]).unwrap().stdout),
            links_before
        );
        assert!(!state.exists());
        return;
    }
    // A kernel with ipip: tunl0 up with the VIP, rp_filter off, all undone by stop.
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert!(addresses(&ns, "tunl0").contains(&format!("inet {VIP}/32")));
    assert_eq!(sysctl(&ns, "net.ipv4.conf.tunl0.rp_filter"), "0");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.rp_filter"), "0");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.tunl0.arp_ignore"), "1");
    let stop = realserver(&ns, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(sysctls(&ns, &keys), before);
    assert!(!addresses(&ns, "tunl0").contains(VIP));
}

const VIP6: &str = "2001:db8:21::10";
const RIP6: &str = "2001:db8:40::12";

/// An IPv6-only real server and a peer on its link (where a director would be): `eth0` in
/// each, a veth pair, with 2001:db8:40::12/64 and ::1/64; no IPv4 address anywhere in the
/// real server (127.0.0.1 taken off `lo`). No duplicate address detection, so link-local
/// addresses are usable at once for neighbour discovery.
fn ipv6_real_server_and_peer() -> (Namespace, Namespace) {
    let tag = unique_tag();
    let create = |role: &str| {
        let ns = Namespace::create(&format!("xvs-{tag}-{role}"))
            .unwrap_or_else(|e| panic!("{e} (this test needs root and ip)"));
        for key in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            ns.sysctl(key, "0").unwrap();
        }
        ns
    };
    let rs = create("rs6");
    let peer = create("peer6");
    netns::veth("eth0", &rs, "eth0", &peer).unwrap();
    for (ns, cidr) in [
        (&rs, format!("{RIP6}/64")),
        (&peer, "2001:db8:40::1/64".into()),
    ] {
        ns.ip(&["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    rs.ip(&["addr", "del", "127.0.0.1/8", "dev", "lo"]).unwrap();
    (rs, peer)
}

/// `ip -6 -o addr show dev DEV` in `ns`.
fn addresses6(ns: &Namespace, dev: &str) -> String {
    text(
        &ns.ip(&["-6", "-o", "addr", "show", "dev", dev])
            .unwrap()
            .stdout,
    )
}

/// The IPv4 sysctls an IPv4 DR or TUN start would set, and IPv6's per-device ones: an IPv6
/// start leaves all of them as they are.
const V6_UNTOUCHED: [&str; 12] = [
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.lo.arp_announce",
    "net.ipv4.conf.eth0.arp_ignore",
    "net.ipv4.conf.eth0.arp_announce",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.eth0.rp_filter",
    "net.ipv6.conf.lo.accept_dad",
    "net.ipv6.conf.lo.disable_ipv6",
    "net.ipv6.conf.eth0.accept_dad",
    "net.ipv6.conf.eth0.forwarding",
];

#[test]
fn ipv6_dr_start_status_stop_is_the_vip_on_lo_and_nothing_else() {
    let (ns, _peer) = ipv6_real_server_and_peer();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs6.json");
    let state_arg = state.to_str().unwrap();
    let args = ["--vip", VIP6, "--state", state_arg];
    assert_eq!(
        text(&ns.ip(&["-4", "-o", "addr", "show"]).unwrap().stdout),
        "",
        "an IPv6-only host"
    );
    // The operator's own address on lo, which stop must leave.
    ns.ip(&["-6", "addr", "add", "2001:db8:99::1/128", "dev", "lo"])
        .unwrap();
    ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "2").unwrap();
    let before = sysctls(&ns, &V6_UNTOUCHED);
    let lo_before = addresses6(&ns, "lo");
    assert!(!lo_before.contains(VIP6));

    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(3), "not started yet");
    assert_eq!(
        text(&status.stdout),
        format!(
            "{VIP6} (dr): not started (no state {state_arg})\n  address  {VIP6}/128 dev lo               absent\n"
        ),
        "no sysctls in the plan"
    );

    let typo = realserver(&ns, &[&["start", "--iface", "eth9"][..], &args].concat());
    assert_eq!(
        text(&typo.stderr),
        "xvs realserver: --iface eth9: no such interface\n"
    );
    assert!(!state.exists());

    let start = realserver(&ns, &[&["start"][..], &args].concat());
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert_eq!(
        text(&start.stdout),
        format!("{VIP6} (dr) started: 1 change(s) recorded in {state_arg}\n")
    );
    let lo = addresses6(&ns, "lo");
    assert!(
        lo.contains(&format!("inet6 {VIP6}/128 scope global nodad")),
        "{lo}"
    );
    assert!(!lo.contains("tentative"), "usable at once: {lo}");
    assert!(lo.contains("inet6 2001:db8:99::1/128"), "{lo}");
    assert_eq!(
        sysctls(&ns, &V6_UNTOUCHED),
        before,
        "no ARP sysctl for IPv6"
    );

    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(0));
    assert_eq!(
        text(&status.stdout),
        format!(
            "{VIP6} (dr): started, state {state_arg}\n  address  {VIP6}/128 dev lo               present  added by xvs\n"
        )
    );

    // A second start changes nothing and keeps the first record.
    let recorded = std::fs::read_to_string(&state).unwrap();
    let again = realserver(&ns, &[&["start", "--iface", "eth0"][..], &args].concat());
    assert_eq!(
        text(&again.stdout),
        format!("{VIP6} (dr) already started; nothing changed\n")
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // Removed by hand since: status says so, a start puts it back, the record stays.
    ns.ip(&["addr", "del", &format!("{VIP6}/128"), "dev", "lo"])
        .unwrap();
    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stdout).contains("absent   added by xvs  CHANGED since start"),
        "{}",
        text(&status.stdout)
    );
    let fix = realserver(&ns, &[&["start"][..], &args].concat());
    assert_eq!(
        text(&fix.stdout),
        format!("{VIP6} (dr) already started; 1 setting(s) put back\n")
    );
    assert!(addresses6(&ns, "lo").contains(&format!("inet6 {VIP6}/128")));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // Another mode on top is refused with one line and changes nothing.
    let tun = realserver(&ns, &[&["start", "--mode", "tun"][..], &args].concat());
    assert_eq!(tun.status.code(), Some(1));
    assert_eq!(
        text(&tun.stderr),
        format!(
            "xvs realserver: {VIP6} is already set up for dr ({state_arg}): run `xvs realserver stop --vip {VIP6}` first\n"
        )
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // The state is this namespace's: elsewhere it is refused, not applied.
    let elsewhere = std::process::Command::new(XVS)
        .args(["realserver", "stop"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(text(&elsewhere.stderr).contains("was written in network namespace"));
    assert!(state.exists());

    let stop = realserver(&ns, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(
        text(&stop.stdout),
        format!("{VIP6} (dr) stopped: 1 change(s) undone\n")
    );
    assert_eq!(addresses6(&ns, "lo"), lo_before, "exactly the VIP removed");
    assert_eq!(sysctls(&ns, &V6_UNTOUCHED), before);
    assert!(!state.exists());
    let twice = realserver(&ns, &[&["stop"][..], &args].concat());
    assert_eq!(
        text(&twice.stderr),
        format!("xvs realserver: {VIP6} is not started: no state file {state_arg}\n")
    );
}

/// `ip -6 neigh show ADDR dev eth0` in `ns`.
fn neighbour(ns: &Namespace, addr: &str) -> String {
    text(
        &ns.ip(&["-6", "neigh", "show", addr, "dev", "eth0"])
            .unwrap()
            .stdout,
    )
}

/// `ping -6 -c 1 -W 2 ADDR` from `ns`: whether it was answered.
fn ping6(ns: &Namespace, addr: &str) -> bool {
    ns.command("ping")
        .args(["-6", "-c", "1", "-W", "2", addr])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn ipv6_dr_vip_takes_routed_connections_and_is_not_answered_for_in_neighbour_discovery() {
    let (rs, peer) = ipv6_real_server_and_peer();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs6.json");
    let args = ["--vip", VIP6, "--state", state.to_str().unwrap()];
    let start = realserver(&rs, &[&["start"][..], &args].concat());
    assert!(start.status.success(), "{}", text(&start.stderr));

    // The control: the real server's own address is resolved (a neighbour entry with its
    // MAC) ...
    assert!(ping6(&peer, RIP6));
    assert!(
        neighbour(&peer, RIP6).contains("lladdr"),
        "{}",
        neighbour(&peer, RIP6)
    );
    // ... the VIP, on-link from the peer's side, is not: every solicitation unanswered.
    peer.ip(&["-6", "route", "add", &format!("{VIP6}/128"), "dev", "eth0"])
        .unwrap();
    assert!(
        !ping6(&peer, VIP6),
        "the real server answered a neighbour solicitation for the VIP"
    );
    wait_for(
        "the VIP's neighbour entry to fail",
        Duration::from_secs(6),
        || neighbour(&peer, VIP6).contains("FAILED"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", neighbour(&peer, VIP6)));
    assert!(!neighbour(&peer, VIP6).contains("lladdr"));

    // Routed to the real server as a director does (to its MAC, the VIP as destination):
    // a listener bound to the VIP itself takes the connection.
    peer.ip(&[
        "-6",
        "route",
        "replace",
        &format!("{VIP6}/128"),
        "via",
        RIP6,
    ])
    .unwrap();
    let mut listener = rs
        .command(servers::python())
        .args(["-c", servers::TCP_LINES, "rs", "8080", VIP6])
        .spawn()
        .unwrap();
    let listening = wait_for("the listener on the VIP", Duration::from_secs(5), || {
        rs.exec("ss", &["-Hltn", "src", &format!("[{VIP6}]:8080")])
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    let mut session = peer
        .command(servers::python())
        .args(["-c", servers::TCP_SESSION, VIP6, "8080"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    session.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let answer = session.wait_with_output().unwrap();
    let _ = listener.kill();
    let _ = listener.wait();
    listening.unwrap();
    assert_eq!(
        text(&answer.stdout),
        "rs: hello\n",
        "{}",
        text(&answer.stderr)
    );

    let stop = realserver(&rs, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
}

#[test]
fn ipv6_vip_is_refused_where_ipv6_is_disabled_and_nothing_changes() {
    let (ns, _peer) = ipv6_real_server_and_peer();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs6.json");
    let args = ["--vip", VIP6, "--state", state.to_str().unwrap()];
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "1").unwrap();
    let before = sysctls(&ns, &V6_UNTOUCHED);
    let start = realserver(&ns, &[&["start"][..], &args].concat());
    assert_eq!(start.status.code(), Some(1));
    assert_eq!(
        text(&start.stderr),
        format!(
            "xvs realserver: {VIP6} cannot go on lo: IPv6 is disabled on lo (net.ipv6.conf.lo.disable_ipv6=1)\n"
        )
    );
    assert_eq!(sysctls(&ns, &V6_UNTOUCHED), before, "not turned on");
    assert_eq!(addresses6(&ns, "lo"), "");
    assert!(!state.exists());
}

#[test]
fn ipv6_tun_needs_the_ip6_tunnel_module_and_without_it_changes_nothing() {
    let (ns, _peer) = ipv6_real_server_and_peer();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rs6.json");
    let args = [
        "--vip",
        VIP6,
        "--mode",
        "tun",
        "--state",
        state.to_str().unwrap(),
    ];
    let before = sysctls(&ns, &V6_UNTOUCHED);
    let links_before = text(&ns.ip(&["-o", "link", "show"]).unwrap().stdout);
    let addresses_before = text(&ns.ip(&["-6", "-o", "addr", "show"]).unwrap().stdout);
    let start = realserver(&ns, &[&["start"][..], &args].concat());
    if !Path::new("/sys/module/ip6_tunnel").exists() {
        // This machine's kernel: refused with one line naming the module, nothing changed.
        assert_eq!(start.status.code(), Some(1));
        let refusal = text(&start.stderr);
        assert_eq!(refusal.lines().count(), 1, "{refusal}");
        assert!(
            refusal.starts_with(
                "xvs realserver: --mode tun needs the kernel's ip6_tunnel module for ip6tnl0, and this kernel has none ("
            ),
            "{refusal}"
        );
        assert_eq!(sysctls(&ns, &V6_UNTOUCHED), before);
        assert_eq!(
            text(&ns.ip(&["-o", "link", "show"]).unwrap().stdout),
            links_before
        );
        assert_eq!(
            text(&ns.ip(&["-6", "-o", "addr", "show"]).unwrap().stdout),
            addresses_before
        );
        assert!(!state.exists());
        return;
    }
    // A kernel with ip6_tunnel: ip6tnl0 up with the VIP, no sysctl touched (IPv6 has no
    // rp_filter), all undone by stop.
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert!(
        addresses6(&ns, "ip6tnl0").contains(&format!("inet6 {VIP6}/128")),
        "{}",
        addresses6(&ns, "ip6tnl0")
    );
    let link = text(&ns.ip(&["-o", "link", "show", "ip6tnl0"]).unwrap().stdout);
    assert!(link.contains(",UP"), "{link}");
    assert_eq!(sysctls(&ns, &V6_UNTOUCHED), before);
    let status = realserver(&ns, &[&["status"][..], &args].concat());
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let stop = realserver(&ns, &[&["stop"][..], &args].concat());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(sysctls(&ns, &V6_UNTOUCHED), before);
    assert_eq!(
        text(&ns.ip(&["-o", "link", "show"]).unwrap().stdout),
        links_before
    );
    assert!(!state.exists());
}

#[test]
fn a_vip_that_is_no_address_is_refused_with_one_line() {
    for (vip, why) in [
        ("172.16.21", "--vip 172.16.21: not an IPv4 or IPv6 address"),
        (
            "2001:db8::g",
            "--vip 2001:db8::g: not an IPv4 or IPv6 address",
        ),
        (
            "::ffff:172.16.21.10",
            "--vip ::ffff:172.16.21.10: an IPv4-mapped address; give the IPv4 VIP 172.16.21.10",
        ),
    ] {
        let out = std::process::Command::new(XVS)
            .args(["realserver", "status", "--vip", vip])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a usage error");
        assert_eq!(text(&out.stderr), format!("xvs realserver: {why}\n"));
        assert_eq!(text(&out.stdout), "");
    }
}
