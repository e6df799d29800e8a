//! End to end: two directors running the real `xvs` on AF_XDP, keepalived (VRRP) moving the
//! VIP between them, real kernel clients and servers in network namespaces. Needs root,
//! keepalived and nftables.
//!
//! Without connection sync (no sync section yet), these tests check the infrastructure: the
//! VIP starts on director1, a long conversation runs through it, director1's xvs is killed
//! with SIGKILL, the VIP moves to director2 within a bound, and new connections work through
//! director2. The old conversation cannot survive (director2 does not know its flow and
//! drops its packets), so its report is printed, not judged.

use std::time::{Duration, Instant};

use xvs_cli::lab::ha::HaLab;
use xvs_cli::lab::{LINES_PORT, Mode, Programs};

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

/// The VIP must reach director2 within this of director1's xvs being killed: keepalived's
/// check runs every second, then a priority-0 advert and director2's skew (~0.1 s).
const TAKEOVER_BOUND: Duration = Duration::from_secs(4);

fn failover(mode: Mode) {
    let mut lab = match HaLab::start(mode, programs(), &|_| String::new()) {
        Ok(lab) => lab,
        Err(e) => panic!(
            "HA lab {mode}: {e} (these tests need root, ip, ethtool, curl, python3, keepalived, nft)"
        ),
    };
    assert_eq!(lab.active(), Some(0), "{}", lab.keepalived_logs());

    // New connections go through director1 and are balanced.
    let before: Vec<String> = (0..2).map(|_| lab.http_get().unwrap()).collect();
    assert!(
        before.contains(&"rs1".to_string()) && before.contains(&"rs2".to_string()),
        "{before:?}"
    );

    // A conversation through director1: its flow is in director1's table, not director2's.
    let conversation = lab.conversation(Duration::from_secs(7)).unwrap();
    conversation
        .wait_answered(20, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.director_log(0)));
    let port = format!(":{LINES_PORT}");
    let on_first = lab.xvsadm(0, "-L -n -c").unwrap();
    assert!(
        on_first
            .lines()
            .any(|l| l.contains(&port) && l.contains("ESTABLISHED")),
        "{on_first}"
    );
    let on_second = lab.xvsadm(1, "-L -n -c").unwrap();
    assert!(!on_second.contains(&port), "{on_second}");

    // Director1's xvs crashes; keepalived moves the VIP.
    let answered_before = conversation.answered();
    let killed = Instant::now();
    lab.kill_director(0).unwrap();
    let takeover = lab
        .wait_active(1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{mode}: the VIP is on director2 {takeover:?} after director1's xvs was killed");
    assert!(
        takeover < TAKEOVER_BOUND,
        "{takeover:?}\n{}",
        lab.keepalived_logs()
    );

    // New connections through the VIP now go through director2.
    let answer = loop {
        match lab.http_get() {
            Ok(body) if !body.is_empty() => break body,
            _ if killed.elapsed() > Duration::from_secs(10) => {
                panic!("no HTTP answer through director2\n{}", lab.director_log(1))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    eprintln!(
        "{mode}: first new HTTP answer ({answer}) {:?} after the kill",
        killed.elapsed()
    );
    let after: Vec<String> = (0..4).map(|_| lab.http_get().unwrap()).collect();
    assert!(
        after.contains(&"rs1".to_string()) && after.contains(&"rs2".to_string()),
        "{after:?}"
    );
    let stats = lab.xvsadm(1, "-L -n --stats").unwrap();
    let http = stats
        .lines()
        .find(|l| l.starts_with("TCP") && l.contains(":80 "))
        .unwrap_or_else(|| panic!("{stats}"));
    let connections: u64 = http.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(connections >= 5, "{stats}");

    // Without sync the old conversation stalls: shown, not asserted. Only that no kernel
    // reset it: director1's kernel met its packets between the kill and the VIP's removal,
    // and the nftables rule dropped them instead of answering RST.
    let report = conversation.finish().unwrap();
    eprintln!(
        "{mode}: conversation across the failover (no sync): {report:?}; dropped by \
         nftables: director1 {}, director2 {}",
        lab.firewall_drops(0).unwrap(),
        lab.firewall_drops(1).unwrap()
    );
    assert!(report.connected && answered_before >= 20, "{report:?}");
    assert!(!report.reset, "{report:?}");

    // Director1 comes back as the backup: nopreempt keeps the VIP on director2.
    let backups = lab
        .keepalived_log(0)
        .matches("Entering BACKUP STATE")
        .count();
    lab.start_director(0, "").unwrap();
    xvs_cli::lab::wait_for(
        "director1's keepalived back to BACKUP",
        Duration::from_secs(5),
        || {
            lab.keepalived_log(0)
                .matches("Entering BACKUP STATE")
                .count()
                > backups
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.keepalived_logs()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.active(), Some(1), "{}", lab.keepalived_logs());
    assert!(!lab.http_get().unwrap().is_empty());
}

#[test]
fn dr_vip_moves_to_the_standby_when_the_active_xvs_dies() {
    failover(Mode::Dr);
}

#[test]
fn nat_vip_and_gateway_move_to_the_standby_when_the_active_xvs_dies() {
    failover(Mode::Nat);
}
