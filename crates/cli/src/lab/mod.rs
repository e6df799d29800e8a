//! `xvs lab`: the seed tutorials, done with xvs on real AF_XDP sockets.
//!
//! [`Lab::start`] builds the seed topology for a forwarding method ([`topology`]), starts on
//! each real server an HTTP server whose page is the server's name (plus a TCP line server
//! and a UDP server for the tests), for TUN the IPIP decapsulator ([`decap`]), and the
//! director: the real `xvs run` in the director's namespace with its control socket in the
//! lab's directory. [`Lab::xvsadm`] then configures it with the seed's own ipvsadm lines, and
//! the client namespace's real `curl` and python sockets send traffic through the VIP.
//! Dropping the lab stops every process and deletes every namespace and link, also after a
//! failure; `xvs lab` also does so on Ctrl-C.

pub mod decap;
pub mod netns;
pub mod servers;
pub mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub use netns::{LabError, LabResult};
pub use topology::{Mode, Topology};

/// HTTP port of the lab services (the seeds balance a web cluster on port 80).
pub const HTTP_PORT: u16 = 80;
/// Port of the TCP line servers (long-lived connections).
pub const LINES_PORT: u16 = 7000;
/// Port of the UDP servers.
pub const UDP_PORT: u16 = 5353;

/// Where the lab finds xvs's own programs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `xvs` binary (daemon, and the TUN decapsulator as `xvs lab-decap`).
    pub xvs: PathBuf,
    /// The `xvsadm` binary.
    pub xvsadm: PathBuf,
}

impl Programs {
    /// `xvs` and `xvsadm` next to the running executable.
    pub fn beside_current_exe() -> LabResult<Programs> {
        let exe = std::env::current_exe()
            .map_err(|e| LabError(format!("cannot find my own binary: {e}")))?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        Ok(Programs {
            xvs: dir.join("xvs"),
            xvsadm: dir.join("xvsadm"),
        })
    }
}

/// A running lab. See the module documentation.
pub struct Lab {
    /// The namespaces and addresses.
    pub topology: Topology,
    programs: Programs,
    dir: PathBuf,
    socket: PathBuf,
    director: Option<Child>,
    helpers: Vec<Child>,
}

impl Lab {
    /// Builds the topology for `mode`, starts the servers and the director (with an empty
    /// table, as an operator's freshly started ipvsadm).
    pub fn start(mode: Mode, programs: Programs) -> LabResult<Lab> {
        let topology = Topology::build(mode)?;
        let dir = std::env::temp_dir().join(format!("xvs-lab-{}", netns::unique_tag()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError(format!("cannot create {}: {e}", dir.display())))?;
        let socket = dir.join("xvs.sock");
        let mut lab = Lab {
            topology,
            programs,
            dir,
            socket,
            director: None,
            helpers: Vec::new(),
        };
        lab.start_real_servers()?;
        lab.start_director()?;
        Ok(lab)
    }

    fn spawn(&mut self, command: Command, log: &str) -> LabResult<()> {
        let child = spawn_logged(command, &self.dir.join(log))?;
        self.helpers.push(child);
        Ok(())
    }

    fn start_real_servers(&mut self) -> LabResult<()> {
        let python = servers::python();
        let names: Vec<(String, usize)> = self
            .topology
            .real_servers
            .iter()
            .enumerate()
            .map(|(i, rs)| (rs.name.clone(), i))
            .collect();
        for (name, i) in names {
            let site = self.dir.join(&name);
            std::fs::create_dir_all(&site).map_err(|e| LabError(e.to_string()))?;
            std::fs::write(site.join("index.html"), format!("{name}\n"))
                .map_err(|e| LabError(e.to_string()))?;
            let rs = &self.topology.real_servers[i];
            let mut http = rs.ns.command(python);
            http.args([
                "-m",
                "http.server",
                &HTTP_PORT.to_string(),
                "--bind",
                "0.0.0.0",
                "--directory",
            ])
            .arg(&site);
            let mut lines = rs.ns.command(python);
            lines.args(["-c", servers::TCP_LINES, &name, &LINES_PORT.to_string()]);
            let mut udp = rs.ns.command(python);
            udp.args(["-c", servers::UDP_NAME, &name, &UDP_PORT.to_string()]);
            let decap = (self.topology.mode == Mode::Tun).then(|| {
                let mut decap = rs.ns.command(&self.programs.xvs.to_string_lossy());
                decap.args([
                    "lab-decap",
                    "--iface",
                    &rs.dev,
                    "--tun",
                    "tun0",
                    "--source",
                    &self.topology.dip,
                    "--me",
                    &rs.rip,
                ]);
                decap
                    .arg("--report")
                    .arg(self.dir.join(format!("{name}.decap")));
                decap
            });
            self.spawn(http, &format!("{name}-http.log"))?;
            self.spawn(lines, &format!("{name}-lines.log"))?;
            self.spawn(udp, &format!("{name}-udp.log"))?;
            if let Some(decap) = decap {
                self.spawn(decap, &format!("{name}-decap.log"))?;
            }
        }
        // Ready when each answers on loopback from inside its namespace.
        for rs in &self.topology.real_servers {
            let url = format!("http://127.0.0.1:{HTTP_PORT}/");
            wait_for(
                &format!("{}'s HTTP server", rs.name),
                Duration::from_secs(10),
                || rs.ns.exec("curl", &["-s", "--max-time", "1", &url]).is_ok(),
            )?;
        }
        Ok(())
    }

    /// The director's configuration file: its interfaces, then `services` (TOML
    /// `[[service]]` tables, possibly empty).
    pub fn config_text(&self, services: &str) -> String {
        let ifaces = &self.topology.director_ifaces;
        let daemon = match ifaces.as_slice() {
            [one] => format!("interface = \"{one}\"\n"),
            [external, internal, ..] => {
                format!("external = \"{external}\"\ninternal = \"{internal}\"\n")
            }
            [] => String::new(),
        };
        format!("[daemon]\n{daemon}queues = 1\n\n{services}")
    }

    /// Path of the director's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("xvs.toml")
    }

    /// Rewrites the configuration file with `services` and sends SIGHUP, as an operator
    /// reloads a director; returns once `xvsadm -S -n` shows `expect`.
    pub fn reload(&self, services: &str, expect: &str) -> LabResult<()> {
        std::fs::write(self.config_path(), self.config_text(services))
            .map_err(|e| LabError(e.to_string()))?;
        self.signal_director("HUP")?;
        wait_for("the reload", Duration::from_secs(10), || {
            self.xvsadm("-S -n").is_ok_and(|s| s.contains(expect))
        })
    }

    fn start_director(&mut self) -> LabResult<()> {
        std::fs::write(self.config_path(), self.config_text(""))
            .map_err(|e| LabError(e.to_string()))?;
        let mut command = self
            .topology
            .director
            .command(&self.programs.xvs.to_string_lossy());
        command.arg("run").arg("--config").arg(self.config_path());
        command.arg("--socket").arg(&self.socket);
        command.env("RUST_LOG", "info");
        let child = spawn_logged(command, &self.dir.join("director.log"))?;
        self.director = Some(child);
        let started = wait_for(
            "the director's control socket",
            Duration::from_secs(15),
            || {
                if let Some(Ok(Some(_))) = self.director.as_mut().map(Child::try_wait) {
                    return true; // exited: reported below
                }
                self.xvsadm("-L -n").is_ok()
            },
        );
        if let Some(Ok(Some(status))) = self.director.as_mut().map(Child::try_wait) {
            return Err(LabError(format!(
                "the director exited ({status}): {}",
                self.director_log().trim()
            )));
        }
        started
    }

    /// The director's log so far.
    pub fn director_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("director.log")).unwrap_or_default()
    }

    /// The lab's working directory (logs, control socket, reports).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `xvsadm ARGS` (split on spaces) against the lab's director; its stdout.
    pub fn xvsadm(&self, args: &str) -> LabResult<String> {
        let output = Command::new(&self.programs.xvsadm)
            .args(args.split_whitespace())
            .env("XVS_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError(format!("cannot run xvsadm: {e}")))?;
        if !output.status.success() {
            return Err(LabError(format!(
                "xvsadm {args}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Configures the seed's service: `-A -t VIP:PORT -s SCHED [-p T]` and one `-a` per real
    /// server with the lab's method and the given weights (`protocol` is `-t` or `-u`).
    pub fn add_service(
        &self,
        protocol: &str,
        port: u16,
        scheduler: &str,
        persistence: Option<u32>,
        weights: &[u32],
    ) -> LabResult<()> {
        let vip = &self.topology.vip;
        let mut add = format!("-A {protocol} {vip}:{port} -s {scheduler}");
        if let Some(timeout) = persistence {
            add.push_str(&format!(" -p {timeout}"));
        }
        self.xvsadm(&add)?;
        for (rs, weight) in self.topology.real_servers.iter().zip(weights) {
            let method = self.topology.mode.option();
            self.xvsadm(&format!(
                "-a {protocol} {vip}:{port} -r {}:{port} {method} -w {weight}",
                rs.rip
            ))?;
        }
        Ok(())
    }

    /// One HTTP GET from the client to the VIP (a new connection each time); the body.
    pub fn http_get(&self) -> LabResult<String> {
        let url = format!("http://{}:{HTTP_PORT}/", self.topology.vip);
        let out = self
            .topology
            .client
            .exec("curl", &["-s", "--max-time", "3", &url])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// One UDP datagram from the client to VIP:UDP_PORT; the answer (empty if none).
    pub fn udp_ask(&self) -> LabResult<String> {
        let out = self.topology.client.exec(
            servers::python(),
            &[
                "-c",
                servers::UDP_ASK,
                &self.topology.vip,
                &UDP_PORT.to_string(),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Opens a long-lived TCP connection from the client to VIP:LINES_PORT.
    pub fn open_session(&self) -> LabResult<Session> {
        let mut child = self
            .topology
            .client
            .command(servers::python())
            .args([
                "-c",
                servers::TCP_SESSION,
                &self.topology.vip,
                &LINES_PORT.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError(format!("cannot start the client session: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Session {
            child,
            stdin,
            stdout,
        })
    }

    /// The TUN decapsulator's report of real server `index`.
    pub fn decap_report(&self, index: usize) -> decap::DecapReport {
        let name = &self.topology.real_servers[index].name;
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.decap"))).unwrap_or_default();
        decap::DecapReport::parse(&text)
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) to the director.
    pub fn signal_director(&self, signal: &str) -> LabResult<()> {
        let pid = self
            .director
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| LabError("no director".into()))?;
        // `ip netns exec` execs the program, so the child's pid is the director's.
        netns::run("kill", &[&format!("-{signal}"), &pid.to_string()]).map(|_| ())
    }

    /// Stops the director with SIGTERM and waits for it; its exit status.
    pub fn stop_director(&mut self) -> LabResult<std::process::ExitStatus> {
        let mut child = self
            .director
            .take()
            .ok_or_else(|| LabError("no director".into()))?;
        let _ = netns::run("kill", &["-TERM", &child.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| LabError(e.to_string()))? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError(
                    "the director did not stop within 10 s of SIGTERM".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.director.is_some() {
            let _ = self.stop_director();
        }
        for child in &mut self.helpers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The topology's namespaces go when it drops, right after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A long-lived client connection (see [`Lab::open_session`]).
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Session {
    /// Sends `line` and returns the answer (`rsN: line`).
    pub fn ask(&mut self, line: &str) -> LabResult<String> {
        let (Some(stdin), Some(stdout)) = (self.stdin.as_mut(), self.stdout.as_mut()) else {
            return Err(LabError("session closed".into()));
        };
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .map_err(|e| LabError(format!("session: {e}")))?;
        let mut answer = String::new();
        stdout
            .read_line(&mut answer)
            .map_err(|e| LabError(format!("session: {e}")))?;
        if answer.is_empty() {
            return Err(LabError("the session's connection closed".into()));
        }
        Ok(answer.trim().to_string())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with no input and its output (stdout and stderr) in the file `log`.
fn spawn_logged(mut command: Command, log: &Path) -> LabResult<Child> {
    let out =
        std::fs::File::create(log).map_err(|e| LabError(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| LabError(e.to_string()))?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError(format!("cannot start {command:?}: {e}")))
}

/// Polls `ready` every 100 ms until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> LabResult<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError(format!("timed out waiting for {what}")))
}

/// What `xvs lab` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabReport {
    /// Answers per real server name (failed requests under "(no answer)").
    pub answers: BTreeMap<String, u32>,
    /// `xvsadm -L -n --stats` at the end.
    pub stats: String,
}

/// `xvs lab`: the seed lab for `mode`, `requests` HTTP requests through the VIP.
pub fn run(
    mode: Mode,
    scheduler: &str,
    requests: u32,
    programs: Programs,
    stop: &std::sync::atomic::AtomicBool,
) -> LabResult<LabReport> {
    let lab = Lab::start(mode, programs)?;
    lab.add_service("-t", HTTP_PORT, scheduler, None, &[1, 1])?;
    let mut report = LabReport::default();
    for _ in 0..requests {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LabError("interrupted".into()));
        }
        let body = lab.http_get().unwrap_or_default();
        let key = if body.is_empty() {
            "(no answer)".to_string()
        } else {
            body
        };
        *report.answers.entry(key).or_default() += 1;
    }
    report.stats = lab.xvsadm("-L -n --stats")?;
    Ok(report)
}
