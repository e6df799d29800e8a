//! Persistence templates: netmasks, port-0 and fwmark services, lifetime bound to the
//! connections they control, PersistConn, and ip_vs_check_template.

mod common;

use common::*;
use xvs_conntrack::*;

fn http() -> ServiceKey {
    ServiceKey::Addr {
        proto: Protocol::Tcp,
        vip: Addr::v4(VIP),
        port: 80,
    }
}

#[test]
fn netmask_groups_clients_of_one_network() {
    let mask = PersistenceMask::v4([255, 255, 255, 0]);
    let a = TemplateKey::new(&http(), Addr::v4([10, 0, 0, 7]), mask);
    let b = TemplateKey::new(&http(), Addr::v4([10, 0, 0, 200]), mask);
    let c = TemplateKey::new(&http(), Addr::v4([10, 0, 1, 7]), mask);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.client_net(), Addr::v4([10, 0, 0, 0]));
    // Default: one template per client.
    let host = PersistenceMask::host(Family::V4);
    assert_ne!(
        TemplateKey::new(&http(), Addr::v4([10, 0, 0, 7]), host),
        TemplateKey::new(&http(), Addr::v4([10, 0, 0, 8]), host)
    );
    assert_eq!(PersistenceMask::v4_prefix(24), mask);
    assert_eq!(PersistenceMask::v4_prefix(0).bits(), 0);
}

#[test]
fn ipv6_prefix_length() {
    let svc = ServiceKey::Addr {
        proto: Protocol::Tcp,
        vip: Addr::v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        port: 443,
    };
    let mask = PersistenceMask::v6_prefix(64);
    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
    let k1 = TemplateKey::new(&svc, Addr::v6(a), mask);
    a[15] = 0x77;
    a[9] = 0x42;
    assert_eq!(k1, TemplateKey::new(&svc, Addr::v6(a), mask));
    a[7] = 3;
    assert_ne!(k1, TemplateKey::new(&svc, Addr::v6(a), mask));
    assert_eq!(
        PersistenceMask::v6_prefix(128),
        PersistenceMask::host(Family::V6)
    );
}

/// A persistent service as the dataplane sees it.
struct Persistent<'a> {
    table: &'a ConnTable,
    servers: &'a Servers,
    svc: ServiceKey,
    mask: PersistenceMask,
}

impl Persistent<'_> {
    /// The scheduling step of a persistent service: reuse the client's template, else let
    /// the scheduler `choose` and remember it.
    fn connect(
        &self,
        shard: &mut Shard,
        rec: &mut Recorder,
        c: Endpoint,
        vport: u16,
        choose: u8,
        now: Secs,
    ) -> (Conn, TemplateRef) {
        let key = TemplateKey::new(&self.svc, c.addr, self.mask);
        let template = match self.table.find_template(&key, self.servers) {
            Some(t) => t,
            None => shard
                .insert_template(
                    &key,
                    DestId(choose as u32),
                    real_server(choose),
                    300,
                    now,
                    rec,
                )
                .unwrap(),
        };
        let new = NewConn {
            key: FlowKey::tcp(c, vip(vport)),
            dest: template.dest,
            dest_addr: template.dest_addr,
            return_path: ReturnPath::ViaDirector,
            template: Some(template),
        };
        let conn = shard.insert(new, now, rec).unwrap();
        (conn, template)
    }
}

#[test]
fn template_pins_a_client_network_to_one_server_across_shards() {
    let (table, mut shards) = ConnTable::new(config(2, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let mask = PersistenceMask::v4_prefix(24);
    let (first, t) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(&mut shards[0], &mut rec, client(1, 1000), 80, 3, 0);
    assert!(first.persistent);
    // Same /24, another port, created by the other worker, which would have chosen 4.
    let (second, t2) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(&mut shards[1], &mut rec, client(2, 2000), 80, 4, 1);
    assert_eq!(t2.flow, t.flow);
    assert_eq!(second.dest, DestId(3));
    assert_eq!(
        rec.get(DestId(3)),
        Counts {
            active: 0,
            inactive: 2,
            persist: 1
        }
    );
    assert_eq!(table.stats().templates, 1);
}

#[test]
fn template_outlives_its_timeout_while_it_controls_connections() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let mask = PersistenceMask::host(Family::V4);
    let s = &mut shards[0];
    let (conn, _t) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(s, &mut rec, client(1, 1), 80, 1, 0);
    s.on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut rec)
        .unwrap();
    s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, 0, &mut rec)
        .unwrap();
    // Keep the connection busy past the template's 300 s.
    for now in (100..=400).step_by(100) {
        s.on_packet(conn.flow, Direction::Input, TcpFlags::ACK, now, &mut rec)
            .unwrap();
        s.expire(now, &mut rec);
    }
    assert_eq!(
        s.stats().templates,
        1,
        "template kept: it controls a connection"
    );
    assert_eq!(rec.get(DestId(1)).persist, 1);
    // The connection is reset and expires (CLOSE, 10 s) ...
    s.on_packet(conn.flow, Direction::Input, TcpFlags::RST, 400, &mut rec)
        .unwrap();
    assert_eq!(s.expire(410, &mut rec), 1);
    assert_eq!(s.stats().conns, 0);
    // ... and the template goes at its next check (IPVS re-arms busy templates for 60 s).
    assert_eq!(s.expire(420, &mut rec), 0);
    assert_eq!(s.expire(460, &mut rec), 1);
    assert_eq!(s.stats().templates, 0);
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn each_new_connection_restarts_the_template_timer() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let mask = PersistenceMask::host(Family::V4);
    let s = &mut shards[0];
    Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(s, &mut rec, client(1, 1), 80, 1, 0);
    s.expire(10, &mut rec); // the unanswered connection leaves after 3 s
    let (_, t) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(s, &mut rec, client(1, 2), 80, 2, 200);
    assert_eq!(t.dest, DestId(1), "still the template's server");
    s.expire(210, &mut rec);
    assert_eq!(s.expire(499, &mut rec), 0, "refreshed at 200: lives to 500");
    assert_eq!(s.expire(500, &mut rec), 1);
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn port_zero_service_shares_one_template_over_all_ports() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let all_ports = ServiceKey::Addr {
        proto: Protocol::Tcp,
        vip: Addr::v4(VIP),
        port: 0,
    };
    let mask = PersistenceMask::host(Family::V4);
    let s = &mut shards[0];
    let (_, t80) = Persistent {
        table: &table,
        servers: &servers,
        svc: all_ports,
        mask,
    }
    .connect(s, &mut rec, client(1, 1), 80, 1, 0);
    let (c443, t443) = Persistent {
        table: &table,
        servers: &servers,
        svc: all_ports,
        mask,
    }
    .connect(s, &mut rec, client(1, 2), 443, 2, 0);
    assert_eq!(t80.flow, t443.flow);
    assert_eq!(c443.dest, DestId(1));
    // A port-specific service does not see it.
    let key = TemplateKey::new(&http(), client(1, 0).addr, mask);
    assert!(table.find_template(&key, &servers).is_none());
}

#[test]
fn fwmark_templates_are_keyed_by_mark() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let mark = |m| ServiceKey::Fwmark {
        mark: m,
        family: Family::V4,
    };
    let mask = PersistenceMask::host(Family::V4);
    let s = &mut shards[0];
    let (_, t1) = Persistent {
        table: &table,
        servers: &servers,
        svc: mark(7),
        mask,
    }
    .connect(s, &mut rec, client(1, 1), 80, 1, 0);
    let (_, t2) = Persistent {
        table: &table,
        servers: &servers,
        svc: mark(7),
        mask,
    }
    .connect(s, &mut rec, client(1, 2), 25, 2, 0);
    let (_, t3) = Persistent {
        table: &table,
        servers: &servers,
        svc: mark(8),
        mask,
    }
    .connect(s, &mut rec, client(1, 3), 80, 2, 0);
    assert_eq!(t1.flow, t2.flow);
    assert_ne!(t1.flow, t3.flow);
    assert_eq!(t3.dest, DestId(2));
}

#[test]
fn removed_server_invalidates_its_template() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let mut servers = Servers::default();
    let mask = PersistenceMask::host(Family::V4);
    let s = &mut shards[0];
    let (_, t) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(s, &mut rec, client(1, 1), 80, 1, 0);
    servers.removed.insert(DestId(1));
    let key = TemplateKey::new(&http(), client(1, 0).addr, mask);
    assert!(table.find_template(&key, &servers).is_none());
    servers.removed.clear();
    assert!(
        table.find_template(&key, &servers).is_none(),
        "an invalidated template is never matched again"
    );
    // A new template is made; the old one still counts in PersistConn until it expires.
    let (_, t2) = Persistent {
        table: &table,
        servers: &servers,
        svc: http(),
        mask,
    }
    .connect(s, &mut rec, client(1, 2), 80, 2, 1);
    assert_ne!(t2.flow, t.flow);
    assert_eq!(rec.get(DestId(1)).persist, 1);
    assert_eq!(rec.get(DestId(2)).persist, 1);
    s.expire(400, &mut rec);
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn quiescent_server_keeps_its_template_unless_expire_quiescent_template() {
    for option in [false, true] {
        let (table, mut shards) = ConnTable::new(Config {
            options: Options {
                expire_quiescent_template: option,
                ..Options::default()
            },
            ..config(1, 64)
        });
        let mut rec = Recorder::default();
        let mut servers = Servers::default();
        let mask = PersistenceMask::host(Family::V4);
        let s = &mut shards[0];
        Persistent {
            table: &table,
            servers: &servers,
            svc: http(),
            mask,
        }
        .connect(s, &mut rec, client(1, 1), 80, 1, 0);
        servers.quiesced.insert(DestId(1));
        let key = TemplateKey::new(&http(), client(1, 0).addr, mask);
        assert_eq!(
            table.find_template(&key, &servers).is_some(),
            !option,
            "expire_quiescent_template = {option}"
        );
    }
}

#[test]
fn attaching_to_an_expired_template_fails_cleanly() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let servers = Servers::default();
    let mask = PersistenceMask::host(Family::V4);
    let key = TemplateKey::new(&http(), client(1, 0).addr, mask);
    let s = &mut shards[0];
    let t = s
        .insert_template(&key, DestId(1), real_server(1), 300, 0, &mut rec)
        .unwrap();
    assert_eq!(table.find_template(&key, &servers), Some(t));
    assert_eq!(s.expire(300, &mut rec), 1);
    let new = NewConn {
        template: Some(t),
        ..nat_conn(client(1, 5), 1)
    };
    assert_eq!(s.insert(new, 301, &mut rec), Err(InsertError::TemplateGone));
    assert_eq!(
        s.len(),
        0,
        "the slot taken for the refused connection was returned"
    );
    assert_eq!(rec.total(), Counts::default());
}

#[test]
fn stale_template_handle_cannot_attach_to_a_reused_slot() {
    let (table, mut shards) = ConnTable::new(config(1, 64));
    let mut rec = Recorder::default();
    let mask = PersistenceMask::host(Family::V4);
    let key = TemplateKey::new(&http(), client(1, 0).addr, mask);
    let s = &mut shards[0];
    let stale = s
        .insert_template(&key, DestId(1), real_server(1), 300, 0, &mut rec)
        .unwrap();
    assert_eq!(s.expire(300, &mut rec), 1);
    // The freed slot is taken by an ordinary connection.
    let plain = s.insert(nat_conn(client(2, 2), 2), 300, &mut rec).unwrap();
    assert_eq!(plain.flow.slot, stale.flow.slot);
    let new = NewConn {
        template: Some(stale),
        ..nat_conn(client(1, 5), 1)
    };
    assert_eq!(s.insert(new, 300, &mut rec), Err(InsertError::TemplateGone));
    let plain_now = table.get(plain.flow).unwrap();
    assert!(
        !plain_now.persistent,
        "the connection's slot was not touched"
    );
    assert_eq!(s.expire(400, &mut rec), 1);
    assert_eq!(rec.total(), Counts::default());
}
