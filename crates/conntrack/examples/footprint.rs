//! Memory per connection: fills a table sized for N flows with FILL (default N) NAT
//! connections and prints the resident memory of the empty table and the growth of resident
//! memory divided by FILL (the table's memory grows with use, not with its capacity).
//!
//! `cargo run --release -p xvs-conntrack --example footprint -- 1000000 [FILL]`

use xvs_conntrack::*;

/// Resident set size in bytes, from /proc/self/status (VmRSS, in kB).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// Anonymous memory on transparent huge pages, in kB (smaps_rollup), if the kernel says.
fn huge_page_kb() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N must be a number"))
        .unwrap_or(1_000_000);
    let fill: usize = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("FILL must be a number"))
        .unwrap_or(n)
        .min(n);
    let shards = 2;
    let before = resident_bytes();
    let (table, mut owners) = ConnTable::new(Config::new(shards, n));
    let created = resident_bytes();
    let vip = Endpoint::new([192, 0, 2, 1], 80);
    let mut counters = NoCounters;
    let mut inserted = 0usize;
    for i in 0..fill {
        // Distinct clients: 65k ports over enough addresses.
        let client = Endpoint::new(
            Addr::v4((0x0a00_0000u32 + (i >> 16) as u32).to_be_bytes()),
            (i & 0xffff) as u16,
        );
        let dest = (i % 16) as u8;
        let new = NewConn {
            key: FlowKey::tcp(client, vip),
            dest: DestId(dest as u32),
            dest_addr: Endpoint::new([10, 1, 0, dest], 8080),
            return_path: ReturnPath::ViaDirector,
            template: None,
        };
        let shard = &mut owners[i % shards];
        if let Ok(conn) = shard.insert(new, 0, &mut counters) {
            shard
                .on_packet(conn.flow, Direction::Input, TcpFlags::SYN, 0, &mut counters)
                .expect("live");
            inserted += 1;
        }
    }
    let after = resident_bytes();
    assert_eq!(inserted, fill, "table sized for N holds N flows");
    assert_eq!(table.stats().conns as usize, fill);
    println!("capacity {n} flows {fill} shards {shards}");
    println!("resident_before {before} resident_empty_table {created} resident_after {after}");
    if let Some(kb) = huge_page_kb() {
        println!("on_huge_pages_kb {kb}");
    }
    println!(
        "memory_when_full {} (estimate, all arrays)",
        memory_when_full(n, shards)
    );
    println!(
        "bytes_per_conn {:.1}",
        (after - before) as f64 / fill.max(1) as f64
    );
}
