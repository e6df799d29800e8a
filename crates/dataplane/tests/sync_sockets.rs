//! The sync side thread on real UDP sockets between two network namespaces: a master's
//! entries reach a backup over multicast and unicast, bulk resync completes a backup that
//! starts late, authentication refuses forged and replayed messages. Needs root.
//!
//! Each director here is the sync thread with a connection table and a service table, as
//! the runtime builds it; the test plays the workers (it queues due entries and installs
//! what arrives), so the figures are the sync path's own.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Lab, spawn_in};
use xvs_conntrack::{
    Config, ConnTable, Endpoint, FlowKey, NewConn, NoCounters, ReturnPath, Shard, SyncPolicy,
    TcpState, TemplateKey,
};
use xvs_dataplane::publish::Published;
use xvs_dataplane::service::snapshot::{Snapshot, SnapshotBuilder};
use xvs_dataplane::service::spec::{
    DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr, ServiceSpec, ServiceTableSpec,
};
use xvs_dataplane::sync::{DaemonSettings, Install, Role, SyncControl, SyncOptions, SyncPort};

const VIP: [u8; 4] = [192, 0, 2, 1];
const RIP: [u8; 4] = [10, 77, 0, 50];
const KEY: &[u8] = b"a shared key of 32 bytes, really";
const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const RIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50,
];
const MARK_RIP: [u8; 4] = [10, 77, 0, 51];
const MARK_RIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x51,
];

fn snapshot() -> Arc<Snapshot> {
    let vip = ServiceAddr::Inet {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(VIP.into()),
        port: 80,
    };
    let mut table = ServiceTableSpec::default();
    table.add_service(ServiceSpec::new(vip)).unwrap();
    table
        .add_dest(
            &vip,
            DestSpec {
                addr: IpAddr::V4(RIP.into()),
                port: 80,
                method: ForwardMethod::Route,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        )
        .unwrap();
    // services[1]: IPv6 DR; services[2]: persistent fwmark 7, a port-0 TUN real server;
    // services[3]: the same mark for IPv6 (IPVS keys marks by family too), persistent /64.
    let vip6 = ServiceAddr::Inet {
        protocol: Protocol::Tcp,
        addr: IpAddr::from(VIP6),
        port: 80,
    };
    let persistent_mark = |ipv6, prefix_len| {
        let mut marked = ServiceSpec::new(ServiceAddr::Fwmark { mark: 7, ipv6 });
        marked.persistence = Some(PersistenceSpec {
            timeout_secs: 300,
            prefix_len,
        });
        marked
    };
    for (service, addr, port, method) in [
        (
            ServiceSpec::new(vip6),
            IpAddr::from(RIP6),
            80,
            ForwardMethod::Route,
        ),
        (
            persistent_mark(false, 32),
            IpAddr::from(MARK_RIP),
            0,
            ForwardMethod::Tunnel,
        ),
        (
            persistent_mark(true, 64),
            IpAddr::from(MARK_RIP6),
            0,
            ForwardMethod::Tunnel,
        ),
    ] {
        let key = service.addr;
        table.add_service(service).unwrap();
        let dest = DestSpec {
            addr,
            port,
            method,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        table.add_dest(&key, dest).unwrap();
    }
    Arc::new(SnapshotBuilder::new().build(&table).unwrap())
}

/// One director's sync side: a table, its shard, the worker's port and the sync thread.
struct Director {
    table: ConnTable,
    shard: Shard,
    port: Arc<SyncPort>,
    sync: SyncControl,
    snapshot: Arc<Snapshot>,
    epoch: Instant,
}

impl Director {
    /// Must run inside the director's namespace (the thread and its sockets live there).
    fn new(capacity: usize) -> Director {
        let snapshot = snapshot();
        let (table, mut shards) = ConnTable::new(Config::new(1, capacity));
        let port = Arc::new(SyncPort::default());
        let epoch = Instant::now();
        let sync = SyncControl::spawn(
            vec![port.clone()],
            table.clone(),
            Arc::new(Published::new(snapshot.clone())),
            epoch,
        )
        .unwrap();
        Director {
            table,
            shard: shards.remove(0),
            port,
            sync,
            snapshot,
            epoch,
        }
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32 + 1
    }

    /// `n` established DR connections from 10.1.x.y.
    fn add_connections(&mut self, n: u32) -> Vec<xvs_conntrack::FlowRef> {
        let dest = self.snapshot.services[0].dests[0].id;
        let now = self.now();
        (0..n)
            .map(|i| {
                let client = Endpoint::new(
                    [10, 1, (i >> 16) as u8, (i >> 8) as u8],
                    1024 + (i & 0xff) as u16 * 100,
                );
                let new = NewConn {
                    key: FlowKey::tcp(client, Endpoint::new(VIP, 80)),
                    dest,
                    dest_addr: Endpoint::new(RIP, 80),
                    return_path: ReturnPath::Bypass,
                    template: None,
                };
                self.shard
                    .install(new, TcpState::Established, 900, now, &mut NoCounters)
                    .unwrap()
                    .flow
            })
            .collect()
    }

    /// Plays the worker: installs what the backup received until `want` are in, or `limit`.
    fn install_until(&mut self, want: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut done = 0;
        while done < want && Instant::now() < deadline {
            match self.port.install.pop() {
                Some(Install::Conn {
                    new,
                    state,
                    timeout,
                }) => {
                    let now = self.now();
                    self.shard
                        .install(new, state, timeout, now, &mut NoCounters)
                        .unwrap();
                    done += 1;
                }
                Some(Install::Template {
                    key,
                    dest,
                    dest_addr,
                    timeout,
                }) => {
                    let now = self.now();
                    self.shard
                        .install_template(&key, dest, dest_addr, timeout, now, &mut NoCounters)
                        .unwrap();
                    done += 1;
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        done
    }
}

fn settings(iface: &str) -> DaemonSettings {
    DaemonSettings::new(iface)
}

/// CPU time of this process's threads named `xvs-sync`, by thread id (schedstat: ns).
fn sync_threads_cpu() -> Vec<(u32, Duration)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "xvs-sync" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.push((tid, Duration::from_nanos(ns)));
    }
    out.sort();
    out
}

/// Two namespaces joined by a veth pair: (lab, master ns, master iface, backup ns, backup iface).
fn two_directors() -> (Lab, String, String, String, String) {
    let mut lab = Lab::new();
    let a = lab.netns("sync-a");
    let b = lab.netns("sync-b");
    let link = lab.veth("s", &a, "10.77.0.1/24", &b, "10.77.0.2/24");
    (lab, a, link.left, b, link.right)
}

#[test]
fn live_sync_reaches_the_backup_over_multicast_and_unicast() {
    for unicast in [false, true] {
        let (_lab, a, a_if, b, b_if) = two_directors();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let peers = move |ip: [u8; 4]| {
            if unicast {
                vec![IpAddr::V4(ip.into())]
            } else {
                Vec::new()
            }
        };
        let backup = spawn_in(&b, move || {
            let mut d = Director::new(4096);
            let options = SyncOptions {
                peers: peers([10, 77, 0, 1]),
                ..SyncOptions::default()
            };
            d.sync
                .configure(None, Some(settings(&b_if)), options)
                .unwrap();
            ready_tx.send(()).unwrap();
            let got = d.install_until(3, Duration::from_secs(5));
            let status = d.sync.status();
            let key = FlowKey::tcp(Endpoint::new([10, 1, 0, 0], 1024), Endpoint::new(VIP, 80));
            let hit = matches!(
                d.shard.lookup_inbound(&key, &*d.snapshot, &mut NoCounters),
                xvs_conntrack::Inbound::Hit(c) if c.state == TcpState::Established && c.dest_addr == Endpoint::new(RIP, 80)
            );
            (got, status, hit)
        });
        ready_rx.recv().unwrap();
        let master = spawn_in(&a, move || {
            let mut d = Director::new(4096);
            let options = SyncOptions {
                peers: peers([10, 77, 0, 2]),
                ..SyncOptions::default()
            };
            d.sync
                .configure(Some(settings(&a_if)), None, options)
                .unwrap();
            for flow in d.add_connections(3) {
                d.port.send(d.table.export(flow).unwrap());
            }
            let _ = done_rx.recv_timeout(Duration::from_secs(6));
            d.sync.status()
        });
        let (got, status, hit) = backup.join().unwrap();
        done_tx.send(()).unwrap();
        let sent = master.join().unwrap();
        assert_eq!(
            got, 3,
            "unicast {unicast}: backup {status:?}, master {sent:?}"
        );
        assert!(
            hit,
            "the synced connection is found with its state and real server"
        );
        assert_eq!((sent.conns_sent, sent.messages_sent), (3, 1), "one message");
        assert_eq!((status.messages_received, status.conns_received), (1, 3));
        assert!(status.rejected.is_empty(), "{status:?}");
    }
}

/// An IPv6 connection, and an IPv4 and an IPv6 fwmark connection with their templates, on
/// the master: the flows a backup that synced only IPv4 address services would lose at
/// failover.
fn add_ipv6_and_fwmark(d: &mut Director) -> Vec<xvs_conntrack::FlowRef> {
    let now = d.now();
    let v6 = d.snapshot.services[1].dests[0].id;
    let new = NewConn {
        key: FlowKey::tcp(Endpoint::new(CLIENT6, 40000), Endpoint::new(VIP6, 80)),
        dest: v6,
        dest_addr: Endpoint::new(RIP6, 80),
        return_path: ReturnPath::Bypass,
        template: None,
    };
    let conn6 = d
        .shard
        .install(new, TcpState::Established, 900, now, &mut NoCounters);
    let mut flows = vec![conn6.unwrap().flow];
    for (service, client, sport, vip, rip) in [
        (
            2,
            IpAddr::from(CLIENT),
            40001,
            IpAddr::from(MARKED_VIP),
            IpAddr::from(MARK_RIP),
        ),
        (
            3,
            IpAddr::from(CLIENT6),
            40002,
            IpAddr::from(MARKED_VIP6),
            IpAddr::from(MARK_RIP6),
        ),
    ] {
        let service = &d.snapshot.services[service];
        let key = TemplateKey::new(
            &service.key,
            client.into(),
            service.persistence.unwrap().mask,
        );
        let marked = service.dests[0].id;
        let template = d
            .shard
            .install_template(
                &key,
                marked,
                Endpoint::new(rip, 0),
                300,
                now,
                &mut NoCounters,
            )
            .unwrap();
        // Port 0 real server: the client's port, 443.
        let new = NewConn {
            key: FlowKey::tcp(Endpoint::new(client, sport), Endpoint::new(vip, 443)),
            dest: marked,
            dest_addr: Endpoint::new(rip, 443),
            return_path: ReturnPath::Bypass,
            template: Some(template),
        };
        let conn = d
            .shard
            .install(new, TcpState::Established, 900, now, &mut NoCounters);
        flows.extend([template.flow, conn.unwrap().flow]);
    }
    flows
}

const CLIENT: [u8; 4] = [198, 51, 100, 7];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const MARKED_VIP: [u8; 4] = [203, 0, 113, 9];
const MARKED_VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

#[test]
fn ipv6_and_fwmark_connections_and_templates_reach_the_backup() {
    let (_lab, a, a_if, b, b_if) = two_directors();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let backup = spawn_in(&b, move || {
        let mut d = Director::new(4096);
        d.sync
            .configure(None, Some(settings(&b_if)), SyncOptions::default())
            .unwrap();
        ready_tx.send(()).unwrap();
        let got = d.install_until(5, Duration::from_secs(5));
        let status = d.sync.status();
        let lookup = |d: &mut Director, key: FlowKey| match d.shard.lookup_inbound(
            &key,
            &*d.snapshot,
            &mut NoCounters,
        ) {
            xvs_conntrack::Inbound::Hit(c) => Some((c.client, c.vip, c.dest_addr, c.state)),
            _ => None,
        };
        let v6 = FlowKey::tcp(Endpoint::new(CLIENT6, 40000), Endpoint::new(VIP6, 80));
        let conn6 = lookup(&mut d, v6);
        let marked = FlowKey::tcp(Endpoint::new(CLIENT, 40001), Endpoint::new(MARKED_VIP, 443));
        let conn = lookup(&mut d, marked);
        let marked6 = FlowKey::tcp(
            Endpoint::new(CLIENT6, 40002),
            Endpoint::new(MARKED_VIP6, 443),
        );
        let conn_marked6 = lookup(&mut d, marked6);
        let template = |d: &Director, service: usize, client: IpAddr| {
            let service = &d.snapshot.services[service];
            let key = TemplateKey::new(
                &service.key,
                client.into(),
                service.persistence.unwrap().mask,
            );
            let found = d
                .table
                .find_template(&key, &*d.snapshot)
                .map(|t| (t.dest, t.dest_addr));
            (found, service.dests[0].id)
        };
        let templates = [
            template(&d, 2, CLIENT.into()),
            template(&d, 3, CLIENT6.into()),
        ];
        (got, status, conn6, conn, conn_marked6, templates)
    });
    ready_rx.recv().unwrap();
    let master = spawn_in(&a, move || {
        let mut d = Director::new(4096);
        d.sync
            .configure(Some(settings(&a_if)), None, SyncOptions::default())
            .unwrap();
        for flow in add_ipv6_and_fwmark(&mut d) {
            d.port.send(d.table.export(flow).unwrap());
        }
        let _ = done_rx.recv_timeout(Duration::from_secs(6));
        d.sync.status()
    });
    let (got, status, conn6, conn, conn_marked6, templates) = backup.join().unwrap();
    done_tx.send(()).unwrap();
    let sent = master.join().unwrap();
    assert_eq!(got, 5, "backup {status:?}, master {sent:?}");
    assert!(status.rejected.is_empty(), "{status:?}");
    assert_eq!(
        conn6,
        Some((
            Endpoint::new(CLIENT6, 40000),
            Endpoint::new(VIP6, 80),
            Endpoint::new(RIP6, 80),
            TcpState::Established
        ))
    );
    assert_eq!(
        conn,
        Some((
            Endpoint::new(CLIENT, 40001),
            Endpoint::new(MARKED_VIP, 443),
            Endpoint::new(MARK_RIP, 443),
            TcpState::Established
        ))
    );
    assert_eq!(
        conn_marked6,
        Some((
            Endpoint::new(CLIENT6, 40002),
            Endpoint::new(MARKED_VIP6, 443),
            Endpoint::new(MARK_RIP6, 443),
            TcpState::Established
        ))
    );
    // Each mark's template on its own family's service, pointing at that service's server.
    let [(template, marked_dest), (template6, marked_dest6)] = templates;
    assert_eq!(template, Some((marked_dest, Endpoint::new(MARK_RIP, 0))));
    assert_eq!(template6, Some((marked_dest6, Endpoint::new(MARK_RIP6, 0))));
}

#[test]
fn bulk_resync_completes_a_late_backup_and_refuses_forgeries() {
    const N: u32 = 100_000;
    let (_lab, a, a_if, b, b_if) = two_directors();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let options = SyncOptions {
        resync: true,
        key: Some(KEY.to_vec()),
        policy: SyncPolicy::default(),
        peers: Vec::new(),
    };
    let master_options = options.clone();
    let master = spawn_in(&a, move || {
        let mut d = Director::new(262_144);
        let flows = d.add_connections(N);
        d.sync
            .configure(Some(settings(&a_if)), None, master_options)
            .unwrap();
        ready_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
        // Live sync of 10k connections, for the thread's CPU per 10k.
        let before = sync_threads_cpu();
        let started = Instant::now();
        for flow in flows.iter().take(10_000) {
            while d.port.outgoing.len() > 8_000 {
                std::thread::sleep(Duration::from_micros(100));
            }
            d.port.send(d.table.export(*flow).unwrap());
        }
        while !d.port.outgoing.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(200));
        let after = sync_threads_cpu();
        (d.sync.status(), before, after, started.elapsed())
    });
    ready_rx.recv().unwrap();
    let backup = spawn_in(&b, move || {
        let mut d = Director::new(262_144);
        let started = Instant::now();
        d.sync
            .configure(None, Some(settings(&b_if)), options)
            .unwrap();
        let got = d.install_until(N as usize, Duration::from_secs(30));
        let elapsed = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.sync.status().resyncs_completed == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A forger on the sync LAN: an unsigned copy of a real message, and garbage.
        let forger = UdpSocket::bind("10.77.0.2:0").unwrap();
        let mut msg = xvs_sync::MessageWriter::new(0, 1472);
        msg.push(&xvs_sync::SyncConn {
            protocol: 6,
            flags: xvs_sync::wire::flags::DROUTE,
            state: 1,
            cport: 9,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: IpAddr::V4(Ipv4Addr::new(6, 6, 6, 6)),
            vaddr: IpAddr::V4(VIP.into()),
            daddr: IpAddr::V4(RIP.into()),
            seq: None,
            pe: None,
        });
        forger.send_to(msg.bytes(), "10.77.0.2:8848").unwrap();
        let mut signed = xvs_sync::auth::Signer::new(b"guessed wrong key!!", 1);
        let forged = signed.sign(msg.bytes(), xvs_sync::auth::now_micros());
        forger.send_to(&forged, "10.77.0.2:8848").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let extra = d.install_until(1, Duration::from_millis(200));
        (got, elapsed, d.sync.status(), extra, d.shard.len())
    });
    let (got, elapsed, status, extra, len) = backup.join().unwrap();
    done_tx.send(()).unwrap();
    let (sent, before, after, live_time) = master.join().unwrap();
    eprintln!(
        "resync of {got} connections: {} ms (backup start to last install; the backup says {} entries in {} ms)",
        elapsed.as_millis(),
        status.last_resync_entries,
        status.last_resync_millis
    );
    assert_eq!(got, N as usize, "{status:?}");
    assert_eq!(len, N as usize);
    assert_eq!(status.resyncs_completed, 1);
    assert_eq!(status.last_resync_entries, u64::from(N));
    assert_eq!(sent.resync_entries_sent, u64::from(N));
    assert_eq!(extra, 0, "nothing forged was installed");
    let rejected: std::collections::HashMap<_, _> = status.rejected.iter().cloned().collect();
    assert_eq!(rejected.get("unauthenticated"), Some(&1), "{status:?}");
    assert_eq!(rejected.get("bad_mac"), Some(&1), "{status:?}");
    // The master's thread is the one that existed before the backup's.
    let master_tid = before.first().map(|(t, _)| *t);
    let cpu = |v: &[(u32, Duration)]| {
        v.iter()
            .find(|(t, _)| Some(*t) == master_tid)
            .map(|(_, d)| *d)
            .unwrap_or_default()
    };
    eprintln!(
        "live sync of 10000 connections: master sync thread CPU {:.1} ms over {} ms ({} messages in all)",
        (cpu(&after) - cpu(&before)).as_secs_f64() * 1000.0,
        live_time.as_millis(),
        sent.messages_sent
    );
    assert!(sent.conns_sent >= 10_000);
    assert_eq!(sent.queue_dropped, 0);
}

#[test]
fn the_daemons_start_and_stop_as_ipvsadm_says() {
    let (_lab, a, a_if, _b, _) = two_directors();
    let result = spawn_in(&a, move || {
        let d = Director::new(64);
        let mut errors = Vec::new();
        d.sync.start(Role::Master, settings(&a_if)).unwrap();
        errors.push(
            d.sync
                .start(Role::Master, settings(&a_if))
                .unwrap_err()
                .to_string(),
        );
        errors.push(d.sync.stop_daemon(Role::Backup).unwrap_err().to_string());
        errors.push(
            d.sync
                .start(Role::Backup, settings("nosuchif0"))
                .unwrap_err()
                .to_string(),
        );
        let mut big = settings(&a_if);
        big.maxlen = 9000;
        d.sync.start(Role::Backup, big).unwrap();
        let status = d.sync.status();
        d.sync.stop_daemon(Role::Master).unwrap();
        (
            errors,
            status,
            d.sync.status(),
            d.port.master.load(Ordering::Relaxed),
        )
    })
    .join()
    .unwrap();
    let (errors, both, after, master_flag) = result;
    assert_eq!(errors[0], "Daemon has already run");
    assert_eq!(errors[1], "No daemon is running");
    assert!(errors[2].starts_with("nosuchif0:"), "{}", errors[2]);
    assert!(both.master.is_some());
    assert_eq!(both.backup.unwrap().maxlen, 1500 - 28, "clamped to the MTU");
    assert!(after.master.is_none() && after.backup.is_some());
    assert!(!master_flag, "workers stop counting for sync");
}

#[test]
fn a_backup_refuses_other_syncids_bad_sizes_versions_and_unknown_services() {
    let (_lab, _a, _, b, b_if) = two_directors();
    let status = spawn_in(&b, move || {
        let mut d = Director::new(64);
        let mut backup = settings(&b_if);
        backup.syncid = 7;
        d.sync.start(Role::Backup, backup).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let conn = |vport: u16| xvs_sync::SyncConn {
            protocol: 6,
            flags: xvs_sync::wire::flags::DROUTE | xvs_sync::wire::flags::NOOUTPUT,
            state: 1,
            cport: 5000,
            vport,
            dport: vport,
            fwmark: 0,
            timeout: 900,
            caddr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            vaddr: IpAddr::V4(VIP.into()),
            daddr: IpAddr::V4(RIP.into()),
            seq: None,
            pe: None,
        };
        let message = |syncid: u8, vport: u16| {
            let mut m = xvs_sync::MessageWriter::new(syncid, 1472);
            m.push(&conn(vport));
            m.bytes().to_vec()
        };
        let peer = UdpSocket::bind("10.77.0.2:0").unwrap();
        let to = "10.77.0.2:8848";
        peer.send_to(&message(9, 80), to).unwrap(); // another syncid
        let mut short = message(7, 80);
        short.truncate(30);
        peer.send_to(&short, to).unwrap(); // size field != datagram
        let mut v0 = message(7, 80);
        v0[0] = 1;
        peer.send_to(&v0, to).unwrap(); // IPVS's version 0 layout
        peer.send_to(&message(7, 81), to).unwrap(); // no such service here
        peer.send_to(&message(7, 80), to).unwrap(); // the one good entry
        let got = d.install_until(2, Duration::from_millis(500));
        (got, d.sync.status())
    })
    .join()
    .unwrap();
    let (got, status) = status;
    assert_eq!(got, 1, "{status:?}");
    let rejected: std::collections::HashMap<_, _> = status.rejected.iter().cloned().collect();
    for reason in ["other_syncid", "bad_size", "bad_version", "no_service"] {
        assert_eq!(rejected.get(reason), Some(&1), "{reason}: {status:?}");
    }
    assert_eq!(status.messages_received, 5);
}
