//! Every ipvsadm command line of the seed tutorials (shared/seeds), parsed by xvsadm's
//! parser, applied to a table, saved with `-S` and restored with `-R` into an equal table.

use xvs_cli::director::{Director, Edit, ListRequest, TableOnlyDirector};
use xvs_cli::ipvsadm::{self, Command, ListWhat};
use xvs_cli::listing::{self, ListFormat};
use xvs_cli::names::Names;

/// The NAT lab of seed 000 (lvs_nat.sh).
const SEED_NAT: &[&str] = &[
    "-C",
    "-A -t 192.168.0.11:80 -s lc -p 300",
    "-a -t 192.168.0.11:80 -r 10.168.0.94:80 -m -w 1",
    "-a -t 192.168.0.11:80 -r 10.168.0.95:80 -m -w 1",
];

/// The DR lab of seed 000 (lvs_dr.sh, its variables expanded: VIP 10.168.0.91, RS .94/.95).
const SEED_DR_000: &[&str] = &[
    "-C",
    "-A -t 10.168.0.91:80 -s rr",
    "-a -t 10.168.0.91:80 -r 10.168.0.94:80 -g -w 1",
    "-a -t 10.168.0.91:80 -r 10.168.0.95:80 -g -w 1",
];

/// The DR lab of seed 001, and its listing and housekeeping commands.
const SEED_DR_001: &[&str] = &[
    "-A -t 172.16.21.10:80 -s rr",
    "-a -t 172.16.21.10:80 -r 192.168.40.12 -g -w 2",
    "-a -t 172.16.21.10:80 -r 192.168.40.13 -g -w 1",
];

/// Seed 001's other command lines (its "–stats" is the page's en dash for "--stats").
const SEED_OTHER: &[&str] = &[
    "-L -n",
    "-L -n \u{2013}stats",
    "-L -n --stats",
    "-L -n --rate",
    "-L -n --timeout",
    "-L -n -c",
    "-l -n",
    "-C",
    "-S",
    "-R",
];

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn apply_lines(d: &mut TableOnlyDirector, lines: &[&str]) {
    for line in lines {
        match ipvsadm::parse(&words(line), "xvsadm", &Names::none()) {
            Ok(Command::Edit(edit)) => d.apply(edit).unwrap_or_else(|e| panic!("{line}: {e:?}")),
            other => panic!("{line}: {other:?}"),
        }
    }
}

fn save(d: &TableOnlyDirector) -> String {
    let data = d.list(&ListRequest::Services).unwrap();
    listing::render_save(&data, true, &Names::none())
}

fn round_trip(lines: &[&str]) -> (TableOnlyDirector, String) {
    let mut d = TableOnlyDirector::default();
    apply_lines(&mut d, lines);
    let saved = save(&d);
    let restore = ipvsadm::parse_restore(&saved, "xvsadm", &Names::none()).unwrap();
    let mut again = TableOnlyDirector::default();
    again.apply_batch(&restore.edits).unwrap();
    assert_eq!(again.table(), d.table(), "restore of:\n{saved}");
    assert_eq!(save(&again), saved);
    (d, saved)
}

#[test]
fn nat_seed_round_trips() {
    let (_, saved) = round_trip(SEED_NAT);
    assert_eq!(
        saved,
        "-A -t 192.168.0.11:80 -s lc -p 300\n\
-a -t 192.168.0.11:80 -r 10.168.0.94:80 -m -w 1\n\
-a -t 192.168.0.11:80 -r 10.168.0.95:80 -m -w 1\n"
    );
}

#[test]
fn dr_seeds_round_trip() {
    let (_, saved) = round_trip(SEED_DR_000);
    assert!(saved.starts_with("-A -t 10.168.0.91:80 -s rr\n"));
    let (d, saved) = round_trip(SEED_DR_001);
    assert_eq!(
        saved,
        "-A -t 172.16.21.10:80 -s rr\n\
-a -t 172.16.21.10:80 -r 192.168.40.12:80 -g -w 2\n\
-a -t 172.16.21.10:80 -r 192.168.40.13:80 -g -w 1\n"
    );
    // The listing the seed shows after these commands (ipvsadm's printf widths).
    let data = d.list(&ListRequest::Services).unwrap();
    let text = listing::render_all(
        &data,
        &ListFormat {
            numeric: true,
            ..Default::default()
        },
        &Names::none(),
    );
    assert_eq!(
        text,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  172.16.21.10:80 rr\n\
\x20 -> 192.168.40.12:80             Route   2      0          0         \n\
\x20 -> 192.168.40.13:80             Route   1      0          0         \n"
    );
}

#[test]
fn other_seed_lines_parse() {
    for line in SEED_OTHER {
        let c = ipvsadm::parse(&words(line), "xvsadm", &Names::none())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        match (*line, c) {
            ("-C", Command::Edit(Edit::Clear)) => {}
            ("-S", Command::Save { numeric: false }) => {}
            ("-R", Command::Restore) => {}
            (_, Command::List(l)) => {
                assert!(l.format.numeric, "{line}");
                if line.contains("stats") {
                    assert!(l.format.stats, "{line}");
                }
                if line.contains("-c") {
                    assert_eq!(l.what, ListWhat::Connections);
                }
            }
            (line, c) => panic!("{line}: {c:?}"),
        }
    }
}

#[test]
fn saved_names_restore_through_the_name_files() {
    // `ipvsadm -S` without -n prints names; -R must read them back.
    let names = Names::from_texts("192.168.40.12 rs1\n", "http 80/tcp www\n");
    let mut d = TableOnlyDirector::default();
    apply_lines(&mut d, SEED_DR_001);
    let data = d.list(&ListRequest::Services).unwrap();
    let saved = listing::render_save(&data, false, &names);
    assert!(
        saved.contains("-a -t 172.16.21.10:http -r rs1:http -g -w 2\n"),
        "{saved}"
    );
    let restore = ipvsadm::parse_restore(&saved, "xvsadm", &names).unwrap();
    let mut again = TableOnlyDirector::default();
    again.apply_batch(&restore.edits).unwrap();
    assert_eq!(again.table(), d.table());
}
