//! End to end: two directors running the real `xvs` on AF_XDP, keepalived (VRRP) moving the
//! VIP between them, real kernel clients and servers in network namespaces. Needs root,
//! keepalived and nftables.
//!
//! Both directors run the same services and both sync daemons (IPVS allows master and backup
//! at once), with bulk resync on. A conversation (a line every 50 ms, each echoed) runs
//! through director1; director1's xvs is killed with SIGKILL; keepalived moves the VIP (and
//! for NAT the real servers' gateway) to director2, which knows the flow from sync and carries
//! it on: no reset, no line lost, the longest gap reported. Then director1 restarts as the
//! standby and bulk resync makes its table complete again (`-L -n -c` counts equal), within a
//! measured bound.

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

/// A resynced director's table equals the active one's within this.
const RESYNC_BOUND: Duration = Duration::from_secs(10);

/// Both daemons on the real servers' network, syncid 7, bulk resync on.
fn sync_section(iface: &str) -> String {
    format!(
        "[sync]\nresync = true\n\n[sync.master]\ninterface = \"{iface}\"\nsyncid = 7\n\n\
         [sync.backup]\ninterface = \"{iface}\"\nsyncid = 7\n\n"
    )
}

/// Entries `xvsadm -L -n -c` lists.
fn entries(lab: &HaLab, i: usize) -> usize {
    lab.xvsadm(i, "-L -n -c")
        .map(|t| t.lines().skip(2).filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn failover(mode: Mode) {
    let sync_iface = if mode == Mode::Nat { "int0" } else { "eth0" };
    let section = sync_section(sync_iface);
    let mut lab = match HaLab::start(mode, programs(), &|_| section.clone()) {
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
    // The standby learns the flow from the active's sync messages.
    xvs_cli::lab::wait_for("the flow on director2", Duration::from_secs(3), || {
        lab.xvsadm(1, "-L -n -c").is_ok_and(|t| {
            t.lines()
                .any(|l| l.contains(&port) && l.contains("ESTABLISHED"))
        })
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            lab.xvsadm(1, "--dataplane").unwrap_or_default(),
            lab.director_log(1)
        )
    });
    let daemons = lab.xvsadm(1, "-L --daemon").unwrap();
    assert_eq!(
        daemons,
        format!(
            "master sync daemon (mcast={sync_iface}, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast={sync_iface}, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        )
    );

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

    // The conversation went on through director2: nothing reset, nothing lost, one server.
    let report = conversation.finish().unwrap();
    eprintln!(
        "{mode}: conversation across the failover: longest gap {:.0} ms ({report:?}); dropped \
         by nftables: director1 {}, director2 {}",
        report.longest_gap_ms,
        lab.firewall_drops(0).unwrap(),
        lab.firewall_drops(1).unwrap()
    );
    assert!(report.connected && answered_before >= 20, "{report:?}");
    assert!(!report.reset && !report.closed, "{report:?}");
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(
        report.answered, report.sent,
        "every line answered: {report:?}"
    );
    assert_eq!((report.missing, report.out_of_order), (0, 0), "{report:?}");
    assert_eq!(
        report.servers.len(),
        1,
        "one real server throughout: {report:?}"
    );
    let dataplane = lab.xvsadm(1, "--dataplane").unwrap();
    assert!(dataplane.contains("rejected: none"), "{dataplane}");

    // Director1 comes back as the backup: nopreempt keeps the VIP on director2.
    let backups = lab
        .keepalived_log(0)
        .matches("Entering BACKUP STATE")
        .count();
    let restarted = Instant::now();
    lab.start_director(0, &section).unwrap();
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
    // Bulk resync: the restarted director asked for the table and has every entry again.
    let mut counts = (0, 0);
    let complete = xvs_cli::lab::wait_for("the resync", RESYNC_BOUND, || {
        counts = (entries(&lab, 0), entries(&lab, 1));
        counts.0 == counts.1 && counts.1 > 0
    });
    eprintln!(
        "{mode}: restarted director1 has {} of director2's {} entries {:?} after its start",
        counts.0,
        counts.1,
        restarted.elapsed()
    );
    complete.unwrap_or_else(|e| {
        panic!(
            "{e}: {counts:?}\n{}\n{}",
            lab.xvsadm(0, "--dataplane").unwrap_or_default(),
            lab.director_log(0)
        )
    });
    let restarted_sync = lab.xvsadm(0, "--dataplane").unwrap();
    assert!(restarted_sync.contains("completed 1"), "{restarted_sync}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.active(), Some(1), "{}", lab.keepalived_logs());
    assert!(!lab.http_get().unwrap().is_empty());
}

#[test]
fn dr_failover_carries_the_conversation_and_a_restarted_director_resyncs() {
    failover(Mode::Dr);
}

#[test]
fn nat_failover_carries_the_conversation_and_a_restarted_director_resyncs() {
    failover(Mode::Nat);
}
