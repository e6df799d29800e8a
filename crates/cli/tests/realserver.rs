//! End to end: `xvs realserver start|status|stop` in a fresh network namespace, every
//! sysctl and address checked before, during and after. Needs root.

use std::path::Path;
use std::process::Output;

use xvs_cli::lab::Namespace;
use xvs_cli::lab::netns::unique_tag;

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
