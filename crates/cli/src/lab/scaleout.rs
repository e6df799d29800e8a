//! The scale-out lab: N directors (2 or 3) behind a router's ECMP, each running the real
//! `xvs run` on AF_XDP and announcing the VIP over BGP with bird2, agreeing on every flow
//! without shared state (mh tables and `sloppy_tcp`).
//!
//! [`ScaleOutLab::start`] builds a [`ScaleOutTopology`], starts the real servers' programs
//! as [`super::Lab`] does, and:
//!
//! - on the router, bird (`bird -f -c FILE -s SOCKET -P PIDFILE` in its namespace, every
//!   file in the lab's directory) with one BGP session per director (AS 65000 to AS 65001),
//!   BFD on each (100 ms, multiplier 3), and the kernel protocol with `merge paths yes`,
//!   so the directors' equal routes to the VIP become one multipath route;
//! - on each director, `xvs run` with the services (mh, `sloppy_tcp`) and an `[announce]`
//!   section, so xvs holds the VIP on its TUN device `xvsvip0` while it is healthy; and bird
//!   with `protocol direct` on that device exporting what is there over BGP to the router.
//!
//! Directors are numbered from 0 in the API (0 is director1). Dropping the lab stops every
//! bird and xvs, the servers, deletes the namespaces and the directory, also after a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::netns::{LabError, LabResult};
use super::servers;
use super::topology::{RealServerSetup, SCALE_OUT_ROUTER, ScaleOutTopology};
use super::{
    Children, HTTP_PORT, LINES_PORT, Programs, ScriptRun, XvsDaemon, config_text, end_child,
    lab_dir, spawn_logged, start_real_servers,
};

/// Debian's bird2.
pub const BIRD: &str = "/usr/sbin/bird";
/// Debian's birdc.
pub const BIRDC: &str = "/usr/sbin/birdc";
/// The router's AS.
const ROUTER_AS: u32 = 65000;
/// The directors' AS (all the same: equal AS paths, so the router merges their routes).
const DIRECTOR_AS: u32 = 65001;
/// The device xvs holds the VIP on (the default of `[announce] device`).
pub const VIP_DEVICE: &str = crate::announce::DEVICE;

/// A running scale-out lab. See the module documentation.
pub struct ScaleOutLab {
    /// The namespaces and addresses.
    pub topology: ScaleOutTopology,
    setup: ScaleOutSetup,
    programs: Programs,
    dir: PathBuf,
    directors: Vec<XvsDaemon>,
    /// bird on each director, then the router's last.
    birds: Vec<Option<Bird>>,
    helpers: Children,
}

/// What the lab's directors run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOutSetup {
    /// How many directors (2 or 3).
    pub directors: usize,
    /// The services' scheduler.
    pub scheduler: String,
    /// The services' `sloppy_tcp`.
    pub sloppy_tcp: bool,
    /// Connection sync: every director both master and backup, unicast to the others.
    pub sync: bool,
}

impl ScaleOutSetup {
    /// Stateless agreement: mh with `sloppy_tcp`, no sync.
    pub fn mh(directors: usize) -> ScaleOutSetup {
        ScaleOutSetup {
            directors,
            scheduler: "mh".into(),
            sloppy_tcp: true,
            sync: false,
        }
    }
}

impl ScaleOutLab {
    /// Builds the lab for `setup`, starts the real servers, the router's bird, and on
    /// every director xvs and bird; returns once the router has a route to the VIP through
    /// every director.
    pub fn start(setup: ScaleOutSetup, programs: Programs) -> LabResult<ScaleOutLab> {
        let n = setup.directors;
        let dir = lab_dir("scaleout")?;
        let real_servers = RealServerSetup::new(&programs.xvs, &dir);
        let topology = ScaleOutTopology::build(n, &real_servers).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        let directors = (0..n)
            .map(|i| XvsDaemon::new(programs.clone(), &dir, &format!("director{}", i + 1)))
            .collect();
        let mut lab = ScaleOutLab {
            birds: (0..=n).map(|_| None).collect(),
            topology,
            setup,
            programs,
            dir,
            directors,
            helpers: Children::default(),
        };
        start_real_servers(
            &lab.topology.real_servers,
            None,
            &lab.programs,
            &lab.dir,
            &mut lab.helpers,
        )?;
        lab.start_router_bird()?;
        for i in 0..n {
            lab.warm_neighbours(i)?;
            lab.start_director(i)?;
            lab.start_director_bird(i)?;
        }
        lab.wait_paths(n, Duration::from_secs(20))?;
        Ok(lab)
    }

    /// The lab's working directory (configuration files, logs, sockets, pid files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many directors the lab has.
    pub fn director_count(&self) -> usize {
        self.directors.len()
    }

    /// The services director `i` runs: TCP LINES_PORT and HTTP_PORT on the VIP with the
    /// setup's scheduler (mh hashing the client's address and port, `mh-port`) and
    /// `sloppy_tcp`, both real servers by DR, listed in an order of the director's own (the
    /// list rotated by `i`), as operators adding them one by one would.
    pub fn services(&self, i: usize) -> String {
        let t = &self.topology;
        let setup = &self.setup;
        let mut rips: Vec<&str> = t.real_servers.iter().map(|rs| rs.rip.as_str()).collect();
        let turn = i % rips.len().max(1);
        rips.rotate_left(turn);
        let flags = if setup.scheduler == "mh" {
            "flags = \"mh-port\"\n"
        } else {
            ""
        };
        [LINES_PORT, HTTP_PORT]
            .iter()
            .map(|port| {
                let mut text = format!(
                    "[[service]]\ntcp = \"{}:{port}\"\nscheduler = \"{}\"\n{flags}sloppy_tcp = {}\n",
                    t.vip, setup.scheduler, setup.sloppy_tcp
                );
                for rip in &rips {
                    text.push_str(&format!(
                        "\n[[service.real_server]]\naddress = \"{rip}:{port}\"\nmethod = \"dr\"\n"
                    ));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Director `i`'s configuration: its interface, the announcer, with the setup's `sync`
    /// both sync daemons sending by unicast to the other directors, the services.
    fn director_config(&self, i: usize) -> String {
        let d = &self.topology.directors[i];
        let mut extra = format!("[announce]\ndevice = \"{VIP_DEVICE}\"\n");
        if self.setup.sync {
            let peers: Vec<String> = self
                .topology
                .directors
                .iter()
                .filter(|other| other.address != d.address)
                .map(|other| format!("\"{}\"", other.address))
                .collect();
            extra.push_str(&format!(
                "\n[sync]\nresync = true\npeers = [{}]\n\n[sync.master]\ninterface = \"{iface}\"\nsyncid = 7\n\n\
                 [sync.backup]\ninterface = \"{iface}\"\nsyncid = 7\n",
                peers.join(", "),
                iface = d.iface
            ));
        }
        config_text(std::slice::from_ref(&d.iface), &extra, &self.services(i))
    }

    /// Writes director `i`'s configuration and starts its xvs; returns once it answers.
    pub fn start_director(&mut self, i: usize) -> LabResult<()> {
        let text = self.director_config(i);
        self.directors[i].write_config(&text)?;
        self.directors[i].start(&self.topology.directors[i].ns)
    }

    /// Kills director `i`'s xvs with SIGKILL, as a crash would, and waits for it to exit.
    pub fn kill_director(&mut self, i: usize) -> LabResult<ExitStatus> {
        self.directors[i].kill()
    }

    /// Stops director `i`'s xvs with SIGTERM and waits for it.
    pub fn stop_director(&mut self, i: usize) -> LabResult<ExitStatus> {
        self.directors[i].stop()
    }

    /// Takes director `i`'s LAN interface down, as a dead host or a cut cable would: its
    /// BGP session cannot say goodbye, so only the router's BFD notices.
    pub fn cut_link(&self, i: usize) -> LabResult<()> {
        let d = &self.topology.directors[i];
        d.ns.ip(&["link", "set", &d.iface, "down"]).map(|_| ())
    }

    /// `xvs drain` (or with `undo`, `xvs drain --undo`) against director `i`.
    pub fn drain(&self, i: usize, undo: bool) -> LabResult<()> {
        let socket = self.dir.join(format!("director{}.sock", i + 1));
        let mut command = std::process::Command::new(&self.programs.xvs);
        command.arg("drain").arg("--socket").arg(&socket);
        if undo {
            command.arg("--undo");
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError(format!("xvs drain: {e}")))?;
        if !out.status.success() {
            return Err(LabError(format!(
                "xvs drain: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Runs `xvsadm ARGS` (split on spaces) against director `i`; its stdout.
    pub fn xvsadm(&self, i: usize, args: &str) -> LabResult<String> {
        self.directors[i].xvsadm(args)
    }

    /// Director `i`'s xvs log so far.
    pub fn director_log(&self, i: usize) -> String {
        self.directors[i].log()
    }

    /// Packets that reached director `i`'s xvs for the VIP (the InPkts of its services).
    pub fn in_packets(&self, i: usize) -> u64 {
        let Ok(text) = self.xvsadm(i, "-L -n --stats") else {
            return 0;
        };
        text.lines()
            .filter(|l| l.starts_with("TCP"))
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum()
    }

    /// The router's next hops for the VIP now (`ip route show VIP` in its namespace).
    pub fn next_hops(&self) -> Vec<String> {
        next_hops_of(&self.topology)
    }

    /// Waits until the router routes the VIP over exactly `n` next hops; how long it took.
    /// Polls every 5 ms.
    pub fn wait_paths(&self, n: usize, limit: Duration) -> LabResult<Duration> {
        let started = Instant::now();
        loop {
            if self.next_hops().len() == n {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(LabError(format!(
                    "the router did not reach {n} paths to the VIP within {limit:?} (next hops: {:?})\n{}",
                    self.next_hops(),
                    self.bird_status() + &self.bird_logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether director `i` holds the VIP on its announce device.
    pub fn holds_vip(&self, i: usize) -> bool {
        let ns = &self.topology.directors[i].ns;
        ns.ip(&["-o", "-4", "addr", "show", "dev", VIP_DEVICE])
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(&format!("{}/32", self.topology.vip))
            })
    }

    /// `birdc show protocols` on the router, for failure messages.
    pub fn bird_status(&self) -> String {
        let n = self.directors.len();
        let socket = self.bird_file(n, "ctl");
        self.topology
            .router
            .exec(
                BIRDC,
                &["-s", &socket.to_string_lossy(), "show", "protocols"],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string())
    }

    /// Every bird's output and log, headed by its name, for failure messages.
    pub fn bird_logs(&self) -> String {
        (0..=self.directors.len())
            .flat_map(|k| ["out", "log"].map(|ext| self.bird_file(k, ext)))
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                format!("--- {} ---\n{text}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the conversations of [`servers::CONVERSATIONS`]: `n` from the client's
    /// addresses to VIP:LINES_PORT for `duration`, with new connections alongside.
    pub fn conversations(&self, n: usize, duration: Duration) -> LabResult<Conversations> {
        let sources = self.topology.client_ips.join(",");
        let mut command = self.topology.client.command(servers::python());
        command.args([
            "-c",
            servers::CONVERSATIONS,
            &self.topology.vip,
            &LINES_PORT.to_string(),
            &format!("{:.3}", duration.as_secs_f64()),
            &n.to_string(),
            &sources,
        ]);
        let run = ScriptRun::spawn(
            command,
            "conversations",
            |line, answered| match line.strip_prefix("progress ") {
                Some(n) => {
                    let n = n.trim().parse().unwrap_or(0);
                    answered.store(n, std::sync::atomic::Ordering::Relaxed);
                    true
                }
                None => false,
            },
            // Connecting (3 s per connection at most), sending, the 2 s grace, and slack.
            duration + Duration::from_secs(20),
        )?;
        Ok(Conversations { run })
    }

    fn bird_file(&self, k: usize, ext: &str) -> PathBuf {
        let name = if k == self.directors.len() {
            "bird-router".to_string()
        } else {
            format!("bird-director{}", k + 1)
        };
        self.dir.join(format!("{name}.{ext}"))
    }

    /// The router's bird.conf: a BGP session with BFD per director, ECMP into the kernel.
    fn router_bird_conf(&self) -> String {
        let mut conf = format!(
            "router id {SCALE_OUT_ROUTER};\n\
             log \"{log}\" all;\n\
             protocol device {{ scan time 10; }}\n\
             protocol kernel {{\n\
             \x20   ipv4 {{ import none; export all; }};\n\
             \x20   merge paths yes;\n\
             }}\n\
             protocol bfd {{\n\
             \x20   interface \"eth1\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};\n\
             }}\n\
             template bgp director {{\n\
             \x20   local {SCALE_OUT_ROUTER} as {ROUTER_AS};\n\
             \x20   ipv4 {{ import all; export none; }};\n\
             \x20   bfd on;\n\
             \x20   connect retry time 1;\n\
             \x20   error wait time 1, 5;\n\
             }}\n",
            log = self.bird_file(self.directors.len(), "log").display(),
        );
        for (i, d) in self.topology.directors.iter().enumerate() {
            conf.push_str(&format!(
                "protocol bgp director{} from director {{ neighbor {} as {DIRECTOR_AS}; }}\n",
                i + 1,
                d.address
            ));
        }
        conf
    }

    /// Director `i`'s bird.conf: the VIP device's addresses, exported over BGP with BFD.
    fn director_bird_conf(&self, i: usize) -> String {
        let d = &self.topology.directors[i];
        format!(
            "router id {address};\n\
             log \"{log}\" all;\n\
             protocol device {{ scan time 10; }}\n\
             protocol direct vip {{\n\
             \x20   ipv4;\n\
             \x20   interface \"{VIP_DEVICE}\";\n\
             }}\n\
             protocol bfd {{\n\
             \x20   interface \"{iface}\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};\n\
             }}\n\
             protocol bgp upstream {{\n\
             \x20   local {address} as {DIRECTOR_AS};\n\
             \x20   neighbor {SCALE_OUT_ROUTER} as {ROUTER_AS};\n\
             \x20   ipv4 {{ import none; export where proto = \"vip\"; }};\n\
             \x20   bfd on;\n\
             \x20   connect retry time 1;\n\
             \x20   error wait time 1, 5;\n\
             }}\n",
            address = d.address,
            iface = d.iface,
            log = self.bird_file(i, "log").display(),
        )
    }

    fn start_router_bird(&mut self) -> LabResult<()> {
        let k = self.directors.len();
        let conf = self.router_bird_conf();
        self.start_bird(k, &conf)
    }

    fn start_director_bird(&mut self, i: usize) -> LabResult<()> {
        let conf = self.director_bird_conf(i);
        self.start_bird(i, &conf)
    }

    /// Starts bird `k` (a director's, or the router's for `k == n`) in the foreground with
    /// its own configuration, control socket and pid file.
    fn start_bird(&mut self, k: usize, conf: &str) -> LabResult<()> {
        let path = self.bird_file(k, "conf");
        std::fs::write(&path, conf).map_err(|e| LabError(format!("{}: {e}", path.display())))?;
        let ns = if k == self.directors.len() {
            &self.topology.router
        } else {
            &self.topology.directors[k].ns
        };
        let mut command = ns.command(BIRD);
        command
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(self.bird_file(k, "ctl"))
            .arg("-P")
            .arg(self.bird_file(k, "pid"));
        let child = spawn_logged(command, &self.bird_file(k, "out"))?;
        self.birds[k] = Some(Bird { child });
        Ok(())
    }

    /// Director `i` pings the real servers once, so its kernel's neighbour table (which xvs
    /// forwards with) knows them before the first flow.
    fn warm_neighbours(&self, i: usize) -> LabResult<()> {
        let ns = &self.topology.directors[i].ns;
        for rs in &self.topology.real_servers {
            ns.exec("ping", &["-c", "1", "-W", "2", &rs.rip])?;
        }
        Ok(())
    }
}

/// The router's next hops for the VIP in `topology`, sorted.
fn next_hops_of(topology: &ScaleOutTopology) -> Vec<String> {
    let Ok(out) = topology.router.ip(&["-4", "route", "show", &topology.vip]) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut hops: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

/// Waits until the router of `topology` has `n` next hops for the VIP (5 ms polls).
fn wait_paths_of(topology: &ScaleOutTopology, n: usize, limit: Duration) -> LabResult<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if next_hops_of(topology).len() == n {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(LabError(format!(
        "the router did not reach {n} paths to the VIP within {limit:?}"
    )))
}

impl Drop for ScaleOutLab {
    fn drop(&mut self) {
        for director in &mut self.directors {
            let _ = director.stop();
        }
        for bird in &mut self.birds {
            if let Some(mut b) = bird.take() {
                let _ = end_child(&mut b.child, "TERM", Duration::from_secs(5));
            }
        }
        self.helpers.kill_all();
        // The topology's namespaces go when it drops, right after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running bird, stopped by the lab.
struct Bird {
    child: Child,
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One conversation of [`ConversationsReport`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct OneConversation {
    /// The client address it was opened from.
    pub source: String,
    /// Its client port.
    pub port: u16,
    /// Lines sent.
    pub sent: u64,
    /// Distinct lines answered.
    pub answered: u64,
    /// Lines sent and never answered.
    pub missing: u64,
    /// The real servers that answered (one, if the flow kept its server).
    pub servers: Vec<String>,
    /// The connection was reset.
    pub reset: bool,
    /// The server side closed it.
    pub closed: bool,
    /// Any other failure.
    pub error: Option<String>,
    /// The longest time between two consecutive answers, ms.
    pub longest_gap_ms: f64,
}

/// The new connections made alongside the conversations.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Probes {
    /// Connections tried.
    pub attempts: u64,
    /// Connected, answered, closed.
    pub ok: u64,
    /// Failed (each in `failures`, with its time since the start).
    pub failed: u64,
    /// The slowest successful one, ms (a lost SYN costs a 1 s retransmission).
    pub slowest_ms: f64,
    /// What went wrong, per failure.
    pub failures: Vec<String>,
}

/// What [`Conversations`] saw, from the client's side.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ConversationsReport {
    /// Each long-lived conversation.
    pub conversations: Vec<OneConversation>,
    /// The new connections.
    pub probe: Probes,
}

impl ConversationsReport {
    /// Conversations reset, closed, failed or answered by more than one server.
    pub fn broken(&self) -> Vec<&OneConversation> {
        self.conversations
            .iter()
            .filter(|c| c.reset || c.closed || c.error.is_some() || c.servers.len() != 1)
            .collect()
    }

    /// Lines sent and never answered, over all conversations.
    pub fn lost(&self) -> u64 {
        self.conversations.iter().map(|c| c.missing).sum()
    }

    /// The longest gap of any conversation, ms.
    pub fn longest_gap_ms(&self) -> f64 {
        self.conversations
            .iter()
            .map(|c| c.longest_gap_ms)
            .fold(0.0, f64::max)
    }

    /// Conversations per real server.
    pub fn per_server(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in &self.conversations {
            for s in &c.servers {
                *out.entry(s.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// Long-lived conversations and new connections running on the client (see
/// [`ScaleOutLab::conversations`]). Dropping it kills the client program.
pub struct Conversations {
    run: ScriptRun,
}

impl Conversations {
    /// Answers received so far, over all conversations (updated twice a second).
    pub fn answered(&self) -> u64 {
        self.run.answered()
    }

    /// Waits until `n` answers have come, for `limit` at most.
    pub fn wait_answered(&self, n: u64, limit: Duration) -> LabResult<()> {
        self.run.wait_answered(n, limit)
    }

    /// Waits for the conversations to end and returns their report.
    pub fn finish(self) -> LabResult<ConversationsReport> {
        self.run.finish()
    }
}

/// What [`exercise`] measured.
#[derive(Debug, Clone)]
pub struct ExerciseReport {
    /// The director killed, restarted, then drained and undrained (0-based).
    pub victim: usize,
    /// Packets each director's xvs had received for the VIP just before the kill.
    pub packets_before_kill: Vec<u64>,
    /// From the SIGKILL to the router's route losing the victim's next hop.
    pub withdrawn_after_kill: Duration,
    /// From starting xvs again (its AF_XDP set-up included) to the router's route having
    /// every next hop again.
    pub announced_after_restart: Duration,
    /// From `xvs drain` returning to the victim's next hop leaving the route.
    pub withdrawn_after_drain: Duration,
    /// From `xvs drain --undo` returning to the next hop being back.
    pub announced_after_undo: Duration,
    /// From SIGTERM to the victim's next hop leaving the route (xvs withdraws, then
    /// forwards for `stop_grace_ms` before it exits).
    pub withdrawn_after_stop: Duration,
    /// The victim's `xvsadm -L -n -c` just before the SIGTERM (after its restart).
    pub victim_connections: String,
    /// The client's side of it all.
    pub client: ConversationsReport,
}

impl std::fmt::Display for ExerciseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.client;
        writeln!(
            f,
            "conversations: {} (broken {}, reset {}, lines lost {}, longest gap {:.0} ms)",
            c.conversations.len(),
            c.broken().len(),
            c.conversations.iter().filter(|c| c.reset).count(),
            c.lost(),
            c.longest_gap_ms()
        )?;
        writeln!(
            f,
            "new connections: {} of {} answered, slowest {:.0} ms",
            c.probe.ok, c.probe.attempts, c.probe.slowest_ms
        )?;
        for (i, p) in self.packets_before_kill.iter().enumerate() {
            writeln!(f, "director{}: {p} packets before the kill", i + 1)?;
        }
        for (server, n) in c.per_server() {
            writeln!(f, "{server}: {n} conversations")?;
        }
        writeln!(
            f,
            "director{}: SIGKILL -> route withdrawn in {:.0} ms; restart -> announced in {:.0} ms",
            self.victim + 1,
            self.withdrawn_after_kill.as_secs_f64() * 1000.0,
            self.announced_after_restart.as_secs_f64() * 1000.0
        )?;
        writeln!(
            f,
            "director{}: xvs drain -> withdrawn in {:.0} ms; --undo -> announced in {:.0} ms",
            self.victim + 1,
            self.withdrawn_after_drain.as_secs_f64() * 1000.0,
            self.announced_after_undo.as_secs_f64() * 1000.0
        )?;
        write!(
            f,
            "director{}: SIGTERM -> withdrawn in {:.0} ms",
            self.victim + 1,
            self.withdrawn_after_stop.as_secs_f64() * 1000.0
        )
    }
}

/// The scale-out lab's exercise: `conversations` long-lived conversations and a new
/// connection every 100 ms run through the VIP while director `victim` is killed
/// (SIGKILL), started again, drained, undrained and stopped (SIGTERM); each change's
/// effect on the router's route is timed. Returns what the client saw; judging it is the caller's.
pub fn exercise(
    lab: &mut ScaleOutLab,
    victim: usize,
    conversations: usize,
) -> LabResult<ExerciseReport> {
    let n = lab.director_count();
    let limit = Duration::from_secs(10);
    let talk = lab.conversations(conversations, Duration::from_secs(14))?;
    // One second of every conversation's lines before anything happens.
    talk.wait_answered(10 * conversations as u64, Duration::from_secs(15))?;
    let packets_before_kill = (0..n).map(|i| lab.in_packets(i)).collect();
    let killed = Instant::now();
    lab.kill_director(victim)?;
    lab.wait_paths(n - 1, limit)?;
    let withdrawn_after_kill = killed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Instant::now();
    lab.start_director(victim)?;
    lab.wait_paths(n, limit)?;
    let announced_after_restart = restarted.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    lab.drain(victim, false)?;
    let drained = Instant::now();
    lab.wait_paths(n - 1, limit)?;
    let withdrawn_after_drain = drained.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    lab.drain(victim, true)?;
    let undone = Instant::now();
    lab.wait_paths(n, limit)?;
    let announced_after_undo = undone.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let victim_connections = lab.xvsadm(victim, "-L -n -c")?;
    let stopping = Instant::now();
    let (withdrawn, stopped) = std::thread::scope(|scope| {
        let daemon = &mut lab.directors[victim];
        let stopper = scope.spawn(move || daemon.stop());
        let withdrawn = wait_paths_of(&lab.topology, n - 1, limit).map(|_| stopping.elapsed());
        (withdrawn, stopper.join())
    });
    let withdrawn_after_stop = withdrawn?;
    match stopped {
        Ok(status) => {
            status?;
        }
        Err(_) => return Err(LabError("stopping the director panicked".into())),
    }
    let client = talk.finish()?;
    Ok(ExerciseReport {
        victim,
        packets_before_kill,
        withdrawn_after_kill,
        announced_after_restart,
        withdrawn_after_drain,
        announced_after_undo,
        withdrawn_after_stop,
        victim_connections,
        client,
    })
}
