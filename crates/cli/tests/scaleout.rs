//! End to end: scale-out. Three directors running the real `xvs` on AF_XDP behind a router
//! that spreads the VIP's flows over them by ECMP (L4 hash); each director's bird2 announces
//! the VIP over BGP (with BFD) while its xvs holds it on the announce device. Real kernel
//! clients and servers in network namespaces. Needs root and bird2.
//!
//! 50 long-lived conversations and a new connection every 100 ms run while director1's xvs
//! is killed with SIGKILL, started again, drained (`xvs drain`), undrained and stopped
//! (SIGTERM: it withdraws, then forwards for its grace period before it exits). Each change
//! rehashes flows over the directors; a flow that lands on a director that never saw it is
//! scheduled there by the same mh table (`sloppy_tcp`) and keeps its real server: no
//! conversation is reset, no line is lost, no new connection fails. The gaps, the spread
//! over the directors and the router's withdrawal and announcement times are printed.
//! Every director lists the real servers in its own order.
//!
//! Also: a director whose link is cut is withdrawn by the router's BFD and by its own
//! health; and the same exercise with rr services kept consistent by connection sync
//! between all directors instead of mh.

use std::time::Duration;

use xvs_cli::lab::Programs;
use xvs_cli::lab::scaleout::{ScaleOutLab, ScaleOutSetup, exercise};

/// One lab at a time: each runs up to three xvs and four bird daemons, and the machine may
/// have two cores.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|p| p.into_inner())
}

fn programs() -> Programs {
    Programs {
        xvs: env!("CARGO_BIN_EXE_xvs").into(),
        xvsadm: env!("CARGO_BIN_EXE_xvsadm").into(),
    }
}

/// The router loses a dead or drained director's next hop within this: the announce
/// device vanishes with the process, bird's direct protocol and BGP withdraw at once
/// (measured: 40-90 ms on a 2-core VM; the bound leaves room for a loaded machine).
const WITHDRAW_BOUND: Duration = Duration::from_secs(2);
/// A restarted (AF_XDP set-up included) or undrained director is back in the route within
/// this.
const ANNOUNCE_BOUND: Duration = Duration::from_secs(5);

#[test]
fn conversations_survive_a_director_killed_restarted_and_drained() {
    let _one = one_lab();
    let mut lab = match ScaleOutLab::start(ScaleOutSetup::mh(3), programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("scale-out lab: {e} (this test needs root, ip, curl, python3 and bird2)"),
    };
    let report = exercise(&mut lab, 0, 50)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", lab.director_log(0), lab.bird_logs()));
    println!("{report}");
    let client = &report.client;
    assert_eq!(client.conversations.len(), 50);
    assert!(
        client.broken().is_empty(),
        "conversations broken: {:#?}",
        client.broken()
    );
    assert_eq!(client.lost(), 0, "lines lost");
    assert!(
        client.conversations.iter().all(|c| c.sent >= 100),
        "every conversation ran its 14 s"
    );
    assert_eq!(
        client.probe.failed, 0,
        "new connections failed: {:?}",
        client.probe.failures
    );
    assert!(client.probe.attempts >= 100, "{:?}", client.probe);
    // ECMP spread the flows: every director forwarded some before the kill.
    assert!(
        report.packets_before_kill.iter().all(|&p| p > 0),
        "{:?}",
        report.packets_before_kill
    );
    assert_eq!(client.per_server().len(), 2, "both real servers used");
    assert!(report.withdrawn_after_kill < WITHDRAW_BOUND, "{report}");
    assert!(report.withdrawn_after_drain < WITHDRAW_BOUND, "{report}");
    assert!(report.announced_after_restart < ANNOUNCE_BOUND, "{report}");
    assert!(report.announced_after_undo < ANNOUNCE_BOUND, "{report}");
    assert!(report.withdrawn_after_stop < WITHDRAW_BOUND, "{report}");
    // The restarted director holds entries of conversations opened before it started: it
    // never saw their SYN, and opened them from mid-flow packets (sloppy_tcp).
    let listed = &report.victim_connections;
    let adopted = client
        .conversations
        .iter()
        .filter(|c| listed.contains(&format!("{}:{} ", c.source, c.port)))
        .count();
    println!("director1 adopted {adopted} conversations after its restart");
    assert!(adopted > 0, "{listed}");
}

/// A director that goes silent (its link cut: no BGP notification can leave) is taken out
/// of the route by the router's BFD (100 ms x 3), and new connections keep being answered
/// by the others.
#[test]
fn a_silent_director_is_withdrawn_by_bfd() {
    let _one = one_lab();
    let lab = match ScaleOutLab::start(ScaleOutSetup::mh(2), programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("scale-out lab: {e} (this test needs root, ip, curl, python3 and bird2)"),
    };
    let cut = std::time::Instant::now();
    lab.cut_link(1).unwrap();
    lab.wait_paths(1, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let withdrawn = cut.elapsed();
    println!(
        "director2's link cut -> route withdrawn by BFD in {:.0} ms",
        withdrawn.as_secs_f64() * 1000.0
    );
    assert!(withdrawn < WITHDRAW_BOUND, "{withdrawn:?}");
    // Its own xvs saw its port go down and let go of the VIP (health, not only BFD).
    xvs_cli::lab::wait_for("director2's xvs to drop the VIP", WITHDRAW_BOUND, || {
        !lab.holds_vip(1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.director_log(1)));
    assert!(lab.director_log(1).contains("VIPs withdrawn: eth0 is down"));
    assert!(lab.holds_vip(0));
    let talk = lab.conversations(10, Duration::from_secs(1)).unwrap();
    let report = talk.finish().unwrap();
    assert!(report.broken().is_empty(), "{:#?}", report.broken());
    assert_eq!(report.lost(), 0);
    assert_eq!(report.probe.failed, 0, "{:?}", report.probe.failures);
}

/// Without mh: rr services with connection sync between every pair of directors (each one
/// master and backup, unicast to the others, bulk resync on start). A flow the router moves
/// to another director meets its synced entry there and keeps its real server.
#[test]
fn rr_with_sync_to_peers_keeps_moved_flows_on_their_real_server() {
    let _one = one_lab();
    let setup = ScaleOutSetup {
        directors: 3,
        scheduler: "rr".into(),
        sloppy_tcp: false,
        sync: true,
    };
    let mut lab = match ScaleOutLab::start(setup, programs()) {
        Ok(lab) => lab,
        Err(e) => panic!("scale-out lab: {e} (this test needs root, ip, curl, python3 and bird2)"),
    };
    let report = exercise(&mut lab, 0, 50)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", lab.director_log(0), lab.bird_logs()));
    println!("{report}");
    let client = &report.client;
    assert!(
        client.broken().is_empty(),
        "conversations broken: {:#?}",
        client.broken()
    );
    assert_eq!(client.lost(), 0, "lines lost");
}
