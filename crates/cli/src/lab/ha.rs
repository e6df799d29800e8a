//! The high-availability lab: two directors, active and standby, each running the real
//! `xvs run` on AF_XDP, with keepalived (VRRP) moving the VIP to the standby when the active
//! director's xvs dies.
//!
//! [`HaLab::start`] builds an [`HaTopology`] (DR or NAT), starts the real servers' programs
//! as [`super::Lab`] does, and on each director:
//!
//! - an nftables table ([`NFT_TABLE`]) that drops kernel INPUT traffic to the VIP's service
//!   ports. xvs's frames never reach netfilter (the XDP filter redirects them first); the
//!   rule matters once xvs is gone: its filter detaches, the client's packets reach the
//!   director's kernel, which has no listener there and would answer with a TCP RST, ending
//!   the client's connection before the VIP moves.
//! - `xvs run` with its own configuration file: the interfaces, `queues = 1`, the text the
//!   caller's `sync_section(i)` returns (e.g. the connection-sync settings), and the same
//!   services on both directors (TCP LINES_PORT and HTTP_PORT, rr, both real servers).
//! - keepalived, VRRP only, in the foreground with its files in the lab's directory.
//!   Director1 has priority 150, director2 100, both start as BACKUP with `nopreempt`, so a
//!   director that comes back does not take the VIP back. VRRPv3 with a 0.2 s advert
//!   interval. A `vrrp_script` checks once a second that this director's xvs process lives
//!   (its pid in `directorN.pid`, written once the daemon answers); when it fails the
//!   instance goes to FAULT, drops the VIP and advertises priority 0, and the other director
//!   takes over. For NAT, the VIP (on `ext0`) and the real servers' gateway (on `int0`) are
//!   two VRRP instances in one `vrrp_sync_group`, so they move together.
//!
//! Director1 is started first and holds the VIP when `start` returns; director2's keepalived
//! is then in BACKUP. Each director pings the real servers (NAT: and the client) before xvs
//! starts, so both kernels' neighbour tables, which xvs forwards with, already know them, as
//! a standby's health checks would have them known.
//!
//! Directors are numbered from 0 in the API (0 is director1). Dropping the lab stops
//! keepalived and xvs on both, the servers, deletes every namespace and the directory, also
//! after a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::netns::{LabError, LabResult, Namespace};
use super::topology::{HaTopology, Mode, RealServerSetup};
use super::{
    Children, Conversation, HTTP_PORT, LINES_PORT, Programs, UDP_PORT, XvsDaemon, config_text,
    end_child, http_get, lab_dir, service_toml, spawn_logged, start_real_servers, wait_for,
};

/// Debian's keepalived.
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";
/// The nftables table each director gets (family `ip`).
pub const NFT_TABLE: &str = "xvs_lab_ha";
/// VRRP priorities: director1, director2.
const PRIORITIES: [u32; 2] = [150, 100];
/// VRRP advertisement interval in seconds (VRRPv3 allows hundredths).
const ADVERT_INT: &str = "0.2";
/// First VRRP router id; the NAT lab's second instance uses the next.
const FIRST_VRID: u32 = 51;

/// A running HA lab. See the module documentation.
pub struct HaLab {
    /// The namespaces and addresses.
    pub topology: HaTopology,
    dir: PathBuf,
    directors: Vec<XvsDaemon>,
    keepalived: Vec<Option<Keepalived>>,
    helpers: Children,
}

impl HaLab {
    /// Builds the HA topology for `mode` (DR or NAT), starts the real servers, both
    /// directors' xvs (director `i` with `sync_section(i)` in its configuration file) and
    /// keepalived; returns once director1 holds the VIP and director2 is its backup.
    ///
    /// The sync text goes right after the `[daemon]` keys and before the services, so it
    /// may be more `[daemon]` keys or open its own table (`[sync]`); see [`config_text`].
    pub fn start(
        mode: Mode,
        programs: Programs,
        sync_section: &dyn Fn(usize) -> String,
    ) -> LabResult<HaLab> {
        let dir = lab_dir("ha")?;
        let setup = RealServerSetup::new(&programs.xvs, &dir);
        let topology = HaTopology::build(mode, &setup).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        let directors = (0..topology.directors.len())
            .map(|i| XvsDaemon::new(programs.clone(), &dir, &format!("director{}", i + 1)))
            .collect();
        let mut lab = HaLab {
            keepalived: topology.directors.iter().map(|_| None).collect(),
            topology,
            dir,
            directors,
            helpers: Children::default(),
        };
        start_real_servers(
            &lab.topology.real_servers,
            None,
            &programs,
            &lab.dir,
            &mut lab.helpers,
        )?;
        for i in 0..lab.directors.len() {
            lab.firewall(i)?;
            lab.warm_neighbours(i)?;
            lab.start_director(i, &sync_section(i))?;
        }
        lab.start_keepalived(0)?;
        lab.wait_active(0, Duration::from_secs(10))?;
        lab.start_keepalived(1)?;
        wait_for(
            "director2's keepalived to be BACKUP",
            Duration::from_secs(10),
            || lab.keepalived_log(1).contains("Entering BACKUP STATE"),
        )
        .map_err(|e| LabError(format!("{e}:\n{}", lab.keepalived_log(1))))?;
        Ok(lab)
    }

    /// The lab's working directory (configuration files, logs, sockets, pid files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file of director `i`'s xvs.
    pub fn config_path(&self, i: usize) -> &Path {
        self.directors[i].config_path()
    }

    /// The services both directors are configured with: TCP LINES_PORT and HTTP_PORT on the
    /// VIP, rr, both real servers with the lab's method.
    pub fn services(&self) -> String {
        let t = &self.topology;
        let rips: Vec<&str> = t.real_servers.iter().map(|rs| rs.rip.as_str()).collect();
        let method = t.mode.to_string();
        [LINES_PORT, HTTP_PORT]
            .iter()
            .map(|port| service_toml("tcp", &t.vip, *port, "rr", &rips, &method))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes director `i`'s configuration (with `sync_section`) and starts its xvs; returns
    /// once the daemon answers and its pid is where keepalived's check looks.
    pub fn start_director(&mut self, i: usize, sync_section: &str) -> LabResult<()> {
        let text = config_text(
            &self.topology.directors[i].ifaces,
            sync_section,
            &self.services(),
        );
        self.directors[i].write_config(&text)?;
        self.directors[i].start(&self.topology.directors[i].ns)?;
        let pid = self.directors[i].pid().unwrap_or_default();
        write(&self.pid_file(i), &format!("{pid}\n"))
    }

    /// Kills director `i`'s xvs with SIGKILL, as a crash would, and waits for it to exit.
    pub fn kill_director(&mut self, i: usize) -> LabResult<ExitStatus> {
        let status = self.directors[i].kill();
        let _ = std::fs::remove_file(self.pid_file(i));
        status
    }

    /// Stops director `i`'s xvs with SIGTERM and waits for it.
    pub fn stop_director(&mut self, i: usize) -> LabResult<ExitStatus> {
        let status = self.directors[i].stop();
        let _ = std::fs::remove_file(self.pid_file(i));
        status
    }

    /// Sends `signal` (`HUP`, ...) to director `i`'s xvs.
    pub fn signal_director(&self, i: usize, signal: &str) -> LabResult<()> {
        self.directors[i].signal(signal)
    }

    /// Runs `xvsadm ARGS` (split on spaces) against director `i`; its stdout.
    pub fn xvsadm(&self, i: usize, args: &str) -> LabResult<String> {
        self.directors[i].xvsadm(args)
    }

    /// Director `i`'s xvs log so far.
    pub fn director_log(&self, i: usize) -> String {
        self.directors[i].log()
    }

    /// Director `i`'s keepalived log so far.
    pub fn keepalived_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.keepalived_file(i, "log")).unwrap_or_default()
    }

    /// The directors that hold the VIP now (`ip addr` in their namespaces).
    pub fn holders(&self) -> Vec<usize> {
        (0..self.directors.len())
            .filter(|&i| self.holds(i, &self.topology.vip))
            .collect()
    }

    /// The director that holds the VIP, if exactly one does.
    pub fn active(&self) -> Option<usize> {
        match self.holders().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Waits until director `i` alone holds the VIP and every floating address (NAT: also
    /// the real servers' gateway); how long that took. Polls every 20 ms.
    pub fn wait_active(&self, i: usize, limit: Duration) -> LabResult<Duration> {
        let started = Instant::now();
        loop {
            let all = self
                .topology
                .floating
                .iter()
                .all(|f| self.holds(i, &f.address));
            if all && self.active() == Some(i) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(LabError(format!(
                    "director{} did not take the VIP within {limit:?} (holders: {:?})\n{}",
                    i + 1,
                    self.holders(),
                    self.keepalived_logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Both keepalived logs, headed by their director, for failure messages.
    pub fn keepalived_logs(&self) -> String {
        (0..self.directors.len())
            .map(|i| {
                format!(
                    "--- director{} keepalived ---\n{}",
                    i + 1,
                    self.keepalived_log(i)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One HTTP GET from the client to the VIP (a new connection); the body.
    pub fn http_get(&self) -> LabResult<String> {
        http_get(&self.topology.client, &self.topology.vip)
    }

    /// Starts a conversation from the client to VIP:LINES_PORT lasting `duration`.
    pub fn conversation(&self, duration: Duration) -> LabResult<Conversation> {
        Conversation::start(&self.topology.client, &self.topology.vip, duration)
    }

    /// Starts keepalived on director `i` with its generated configuration.
    pub fn start_keepalived(&mut self, i: usize) -> LabResult<()> {
        if self.keepalived[i].is_some() {
            return Err(LabError(format!("director{}'s keepalived runs", i + 1)));
        }
        write(&self.check_script(i), &self.check_script_text(i))?;
        make_executable(&self.check_script(i))?;
        let conf = self.keepalived_file(i, "conf");
        write(&conf, &self.keepalived_conf(i))?;
        let vrrp_pid = self.keepalived_file(i, "vrrp.pid");
        let mut command = self.topology.directors[i].ns.command(KEEPALIVED);
        command
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
            ])
            .args(["--vrrp", "--use-file"])
            .arg(&conf)
            .arg("--pid")
            .arg(self.keepalived_file(i, "pid"))
            .arg("--vrrp_pid")
            .arg(&vrrp_pid);
        let child = spawn_logged(command, &self.keepalived_file(i, "log"))?;
        self.keepalived[i] = Some(Keepalived { child, vrrp_pid });
        Ok(())
    }

    /// Stops keepalived on director `i` (SIGTERM: it releases its addresses and advertises
    /// priority 0), and waits for it.
    pub fn stop_keepalived(&mut self, i: usize) -> LabResult<()> {
        match self.keepalived[i].take() {
            Some(mut keepalived) => keepalived.stop(),
            None => Err(LabError(format!(
                "director{}'s keepalived does not run",
                i + 1
            ))),
        }
    }

    fn holds(&self, i: usize, address: &str) -> bool {
        let ns = &self.topology.directors[i].ns;
        let Ok(out) = ns.ip(&["-o", "-4", "addr", "show"]) else {
            return false;
        };
        let prefix = format!("{address}/");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|word| word.starts_with(&prefix))
    }

    fn pid_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("director{}.pid", i + 1))
    }

    fn check_script(&self, i: usize) -> PathBuf {
        self.dir.join(format!("check-director{}.sh", i + 1))
    }

    fn keepalived_file(&self, i: usize, ext: &str) -> PathBuf {
        self.dir.join(format!("keepalived{}.{ext}", i + 1))
    }

    /// keepalived's check: succeeds while the process in director `i`'s pid file lives (a
    /// zombie, killed but not yet reaped, counts as gone).
    fn check_script_text(&self, i: usize) -> String {
        format!(
            "#!/bin/sh\n\
             # keepalived's vrrp_script: does director{n}'s xvs run?\n\
             pid=$(cat '{pid}' 2>/dev/null) || exit 1\n\
             state=$(sed -n 's/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p' \"/proc/$pid/status\" 2>/dev/null)\n\
             [ -n \"$pid\" ] && [ -n \"$state\" ] && [ \"$state\" != Z ]\n",
            n = i + 1,
            pid = self.pid_file(i).display()
        )
    }

    /// Director `i`'s keepalived.conf: one VRRP instance per floating address (VRID 51,
    /// 52, ...), in one sync group when there are several.
    fn keepalived_conf(&self, i: usize) -> String {
        let mut conf = format!(
            "global_defs {{\n\
             \x20   router_id {router_id}\n\
             \x20   script_user root\n\
             \x20   vrrp_version 3\n\
             \x20   vrrp_priority -20\n\
             }}\n\n\
             vrrp_script xvs_alive {{\n\
             \x20   script \"{script}\"\n\
             \x20   interval 1\n\
             \x20   timeout 1\n\
             \x20   fall 1\n\
             \x20   rise 1\n\
             }}\n",
            router_id = self.topology.directors[i].ns.name(),
            script = self.check_script(i).display(),
        );
        let floating = &self.topology.floating;
        let names: Vec<String> = (0..floating.len()).map(|k| format!("VI_{k}")).collect();
        if names.len() > 1 {
            conf.push_str(&format!(
                "\nvrrp_sync_group VG_XVS {{\n    group {{\n        {}\n    }}\n}}\n",
                names.join("\n        ")
            ));
        }
        for (k, f) in floating.iter().enumerate() {
            conf.push_str(&format!(
                "\nvrrp_instance {name} {{\n\
                 \x20   state BACKUP\n\
                 \x20   nopreempt\n\
                 \x20   interface {dev}\n\
                 \x20   virtual_router_id {vrid}\n\
                 \x20   priority {priority}\n\
                 \x20   advert_int {ADVERT_INT}\n\
                 \x20   virtual_ipaddress {{\n\
                 \x20       {address}/32 dev {dev}\n\
                 \x20   }}\n\
                 \x20   track_script {{\n\
                 \x20       xvs_alive\n\
                 \x20   }}\n\
                 }}\n",
                name = names[k],
                dev = f.dev,
                vrid = FIRST_VRID + k as u32,
                priority = PRIORITIES[i],
                address = f.address,
            ));
        }
        conf
    }

    /// Drops kernel INPUT traffic to the VIP's service ports on director `i`.
    fn firewall(&self, i: usize) -> LabResult<()> {
        let vip = &self.topology.vip;
        let rules = format!(
            "table ip {NFT_TABLE} {{\n\
             \x20   chain input {{\n\
             \x20       type filter hook input priority filter; policy accept;\n\
             \x20       ip daddr {vip} tcp dport {{ {HTTP_PORT}, {LINES_PORT} }} counter drop\n\
             \x20       ip daddr {vip} udp dport {UDP_PORT} counter drop\n\
             \x20   }}\n\
             }}\n"
        );
        let path = self.dir.join(format!("director{}.nft", i + 1));
        write(&path, &rules)?;
        let ns = &self.topology.directors[i].ns;
        ns.exec("nft", &["-f", &path.to_string_lossy()]).map(|_| ())
    }

    /// Packets director `i`'s kernel dropped by the [`NFT_TABLE`] rules so far (the VIP's
    /// service traffic that reached it while xvs was not there to take it).
    pub fn firewall_drops(&self, i: usize) -> LabResult<u64> {
        let ns = &self.topology.directors[i].ns;
        let out = ns.exec("nft", &["list", "table", "ip", NFT_TABLE])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum())
    }

    /// Director `i` pings the real servers (NAT: and the client) once, so its kernel's
    /// neighbour table knows them before xvs starts.
    fn warm_neighbours(&self, i: usize) -> LabResult<()> {
        let ns: &Namespace = &self.topology.directors[i].ns;
        let mut peers: Vec<&str> = self
            .topology
            .real_servers
            .iter()
            .map(|rs| rs.rip.as_str())
            .collect();
        if self.topology.mode == Mode::Nat {
            peers.push(&self.topology.client_ip);
        }
        for peer in peers {
            ns.exec("ping", &["-c", "1", "-W", "2", peer])?;
        }
        Ok(())
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for keepalived in &mut self.keepalived {
            if let Some(mut k) = keepalived.take() {
                let _ = k.stop();
            }
        }
        for director in &mut self.directors {
            let _ = director.stop();
        }
        self.helpers.kill_all();
        // The topology's namespaces go when it drops, right after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running keepalived (its parent process; the VRRP child's pid is in `vrrp_pid`).
struct Keepalived {
    child: Child,
    vrrp_pid: PathBuf,
}

impl Keepalived {
    /// SIGTERM, 5 s to exit, else SIGKILL for the parent and the VRRP child.
    fn stop(&mut self) -> LabResult<()> {
        let vrrp_pid = std::fs::read_to_string(&self.vrrp_pid).unwrap_or_default();
        let result = end_child(&mut self.child, "TERM", Duration::from_secs(5));
        if let (Err(_), Ok(pid)) = (&result, vrrp_pid.trim().parse::<u32>()) {
            let _ = super::netns::run("kill", &["-KILL", &pid.to_string()]);
        }
        result
            .map(|_| ())
            .map_err(|e| LabError(format!("keepalived {e}")))
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> LabResult<()> {
    std::fs::write(path, text).map_err(|e| LabError(format!("{}: {e}", path.display())))
}

fn make_executable(path: &Path) -> LabResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| LabError(format!("{}: {e}", path.display())))
}
