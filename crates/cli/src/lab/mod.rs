//! `xvs lab`: the seed tutorials, done with xvs on real AF_XDP sockets.
//!
//! [`Lab::start`] builds the seed topology for a forwarding method ([`topology`]), starts on
//! each real server an HTTP server whose page is the server's name (plus a TCP line server
//! and a UDP server for the tests), for TUN the decapsulators ([`decap`]), and the
//! director: the real `xvs run` in the director's namespace with its control socket in the
//! lab's directory. [`Lab::xvsadm`] then configures it with the seed's own ipvsadm lines, and
//! the client namespace's real `curl` and python sockets send traffic through the VIP.
//! Dropping the lab stops every process and deletes every namespace and link, also after a
//! failure; `xvs lab` also does so on Ctrl-C. Tests of health checks stop, start and pause
//! one real server's programs ([`Lab::stop_server`], [`Lab::start_server`],
//! [`Lab::signal_server`]), change the files it serves ([`Lab::site`]) and run an HTTPS
//! server with a certificate of its own CA ([`Lab::start_https`]).
//!
//! [`ha::HaLab`] is the high-availability lab: two directors, keepalived moving the VIP
//! between them, and a [`Conversation`] to watch one connection across a failover.

pub mod decap;
pub mod ha;
pub mod scaleout;
pub mod servers;

pub use xvs_lab::{netns, topology, wait_for};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub use netns::{LabError, LabResult, Namespace};
pub use topology::{Mode, RealServerHost, RealServerSetup, Topology};

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
    /// More of the director's configuration file (see [`config_text`]'s `extra`).
    extra: String,
    dir: PathBuf,
    director: XvsDaemon,
    helpers: Children,
}

impl Lab {
    /// Builds the topology for `mode`, starts the servers and the director (with an empty
    /// table, as an operator's freshly started ipvsadm).
    pub fn start(mode: Mode, programs: Programs) -> LabResult<Lab> {
        Lab::start_with(mode, programs, "")
    }

    /// [`Lab::start`] with `extra` in the director's configuration file, kept across
    /// reloads: more `[daemon]` keys or whole sections (`[metrics]`, `[sync]`).
    pub fn start_with(mode: Mode, programs: Programs, extra: &str) -> LabResult<Lab> {
        Lab::start_inner(mode, programs, extra, false)
    }

    /// [`Lab::start`] for a dual-stack lab: IPv6 beside IPv4 on every host
    /// ([`topology::Ipv6Plan`]), the servers listening on both families, and for TUN a
    /// decapsulator of every [`decap::Tunnel`] kind on each real server: IPIP and
    /// IPv6-in-IPv6, and for services of the other family ([`Lab::add_service_across`])
    /// IPv4-in-IPv6 and IPv6-in-IPv4.
    pub fn start_dual_stack(mode: Mode, programs: Programs) -> LabResult<Lab> {
        Lab::start_inner(mode, programs, "", true)
    }

    fn start_inner(mode: Mode, programs: Programs, extra: &str, ipv6: bool) -> LabResult<Lab> {
        let dir = lab_dir("lab")?;
        let setup = RealServerSetup::new(&programs.xvs, &dir);
        let topology = Topology::build(mode, &setup)
            .and_then(|mut t| {
                if ipv6 {
                    t.add_ipv6(&setup)?;
                }
                Ok(t)
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            })?;
        let director = XvsDaemon::new(programs.clone(), &dir, "director");
        let mut lab = Lab {
            topology,
            extra: extra.to_string(),
            dir,
            director,
            helpers: Children::default(),
        };
        let tunnel_source = (mode == Mode::Tun).then_some(lab.topology.dip.as_str());
        let tunnel_source6 = lab.topology.ipv6.as_ref().map(|p| p.dip.as_str());
        start_real_servers(
            &lab.topology.real_servers,
            tunnel_source.map(|v4| (v4, tunnel_source6)),
            &programs,
            &lab.dir,
            &mut lab.helpers,
        )?;
        lab.director.write_config(&lab.config_text(""))?;
        lab.director.start(&lab.topology.director)?;
        Ok(lab)
    }

    /// The director's configuration file: its interfaces, then `services` (TOML
    /// `[[service]]` tables, possibly empty).
    pub fn config_text(&self, services: &str) -> String {
        config_text(&self.topology.director_ifaces, &self.extra, services)
    }

    /// Path of the director's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.director.config_path().to_path_buf()
    }

    /// Rewrites the configuration file with `services` and sends SIGHUP, as an operator
    /// reloads a director; returns once `xvsadm -S -n` shows `expect`.
    pub fn reload(&self, services: &str, expect: &str) -> LabResult<()> {
        self.director.write_config(&self.config_text(services))?;
        self.signal_director("HUP")?;
        wait_for("the reload", Duration::from_secs(10), || {
            self.xvsadm("-S -n").is_ok_and(|s| s.contains(expect))
        })
    }

    /// The director's process id, while it runs (for its memory in /proc).
    pub fn director_pid(&self) -> Option<u32> {
        self.director.pid()
    }

    /// The director's log so far.
    pub fn director_log(&self) -> String {
        self.director.log()
    }

    /// The lab's working directory (logs, control socket, reports).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `xvsadm ARGS` (split on spaces) against the lab's director; its stdout.
    pub fn xvsadm(&self, args: &str) -> LabResult<String> {
        self.director.xvsadm(args)
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
        let (vip, rips) = self.addresses(false)?;
        self.add_service_at(vip, &rips, protocol, port, scheduler, persistence, weights)
    }

    /// [`Lab::add_service`] on the IPv6 VIP and the real servers' IPv6 addresses (a
    /// dual-stack lab: [`Lab::start_dual_stack`]).
    pub fn add_service6(
        &self,
        protocol: &str,
        port: u16,
        scheduler: &str,
        persistence: Option<u32>,
        weights: &[u32],
    ) -> LabResult<()> {
        let (vip, rips) = self.addresses(true)?;
        self.add_service_at(vip, &rips, protocol, port, scheduler, persistence, weights)
    }

    /// [`Lab::add_service`] across the families, as IPVS allows for tunnels only (a
    /// dual-stack TUN lab): with `vip_ipv6` false the IPv4 VIP with the real servers' IPv6
    /// addresses (xvs sends IPv4-in-IPv6), with it true the IPv6 VIP with their IPv4
    /// addresses (IPv6-in-IPv4).
    pub fn add_service_across(
        &self,
        protocol: &str,
        port: u16,
        scheduler: &str,
        vip_ipv6: bool,
        weights: &[u32],
    ) -> LabResult<()> {
        let (vip, _) = self.addresses(vip_ipv6)?;
        let (_, rips) = self.addresses(!vip_ipv6)?;
        self.add_service_at(vip, &rips, protocol, port, scheduler, None, weights)
    }

    /// The VIP and the real servers' addresses of one family (IPv6 with `ipv6`, which
    /// needs a dual-stack lab).
    fn addresses(&self, ipv6: bool) -> LabResult<(&str, Vec<&str>)> {
        let servers = self.topology.real_servers.iter();
        if ipv6 {
            let plan = self.ipv6_plan()?;
            Ok((
                &plan.vip,
                servers.filter_map(|rs| rs.rip6.as_deref()).collect(),
            ))
        } else {
            Ok((
                &self.topology.vip,
                servers.map(|rs| rs.rip.as_str()).collect(),
            ))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_service_at(
        &self,
        vip: &str,
        rips: &[&str],
        protocol: &str,
        port: u16,
        scheduler: &str,
        persistence: Option<u32>,
        weights: &[u32],
    ) -> LabResult<()> {
        let vs = host_port(vip, port);
        let mut add = format!("-A {protocol} {vs} -s {scheduler}");
        if let Some(timeout) = persistence {
            add.push_str(&format!(" -p {timeout}"));
        }
        self.xvsadm(&add)?;
        for (rip, weight) in rips.iter().zip(weights) {
            let method = self.topology.mode.option();
            self.xvsadm(&format!(
                "-a {protocol} {vs} -r {} {method} -w {weight}",
                host_port(rip, port)
            ))?;
        }
        Ok(())
    }

    fn ipv6_plan(&self) -> LabResult<&topology::Ipv6Plan> {
        self.topology
            .ipv6
            .as_ref()
            .ok_or_else(|| LabError("not a dual-stack lab (Lab::start_dual_stack)".into()))
    }

    /// [`Lab::http_get`] to the IPv6 VIP.
    pub fn http_get6(&self) -> LabResult<String> {
        http_get(&self.topology.client, &self.ipv6_plan()?.vip)
    }

    /// [`Lab::udp_ask`] to the IPv6 VIP.
    pub fn udp_ask6(&self) -> LabResult<String> {
        let vip = self.ipv6_plan()?.vip.clone();
        let out = self.topology.client.exec(
            servers::python(),
            &["-c", servers::UDP_ASK, &vip, &UDP_PORT.to_string()],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// One HTTP GET from the client to the VIP (a new connection each time); the body.
    pub fn http_get(&self) -> LabResult<String> {
        http_get(&self.topology.client, &self.topology.vip)
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

    /// The report of real server `index`'s decapsulator for `tunnel` (a TUN lab; kinds
    /// other than IPIP in a dual-stack one); all zero if it has none.
    pub fn decap_report(&self, index: usize, tunnel: decap::Tunnel) -> decap::DecapReport {
        let name = &self.topology.real_servers[index].name;
        let path = decap_report_path(&self.dir, name, tunnel);
        decap::DecapReport::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) to the director.
    pub fn signal_director(&self, signal: &str) -> LabResult<()> {
        self.director.signal(signal)
    }

    /// Stops the director with SIGTERM and waits for it; its exit status.
    pub fn stop_director(&mut self) -> LabResult<std::process::ExitStatus> {
        self.director.stop()
    }

    /// Stops real server `index`'s `program` (SIGKILL, as a crash), as health checks see
    /// a server fail.
    pub fn stop_server(&mut self, index: usize, program: ServerProgram) -> LabResult<()> {
        let name = program.child_name(&self.topology.real_servers[index].name);
        match self.helpers.kill(&name) {
            true => Ok(()),
            false => Err(LabError(format!("{name} does not run"))),
        }
    }

    /// Starts real server `index`'s `program` again; returns once it answers.
    pub fn start_server(&mut self, index: usize, program: ServerProgram) -> LabResult<()> {
        let rs = &self.topology.real_servers[index];
        let name = program.child_name(&rs.name);
        if self.helpers.pid(&name).is_some() {
            return Err(LabError(format!("{name} already runs")));
        }
        let log = self.dir.join(format!("{name}.log"));
        self.helpers
            .spawn_named(&name, server_command(rs, program, &self.dir), &log)?;
        wait_ready(rs, program)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to real server `index`'s `program`: a stopped
    /// server's kernel still accepts connections, and nothing answers them.
    pub fn signal_server(
        &self,
        index: usize,
        program: ServerProgram,
        signal: &str,
    ) -> LabResult<()> {
        let name = program.child_name(&self.topology.real_servers[index].name);
        let pid = self
            .helpers
            .pid(&name)
            .ok_or_else(|| LabError(format!("{name} does not run")))?;
        netns::run("kill", &[&format!("-{signal}"), &pid.to_string()]).map(|_| ())
    }

    /// The directory real server `index`'s HTTP server serves (`index.html` holds its
    /// name): change its files to change what it answers.
    pub fn site(&self, index: usize) -> PathBuf {
        self.dir.join(&self.topology.real_servers[index].name)
    }

    /// Starts an HTTPS server on real server `index`, port `port`, serving its site with a
    /// certificate for its address signed by a new CA of its own (made with openssl);
    /// returns the CA's certificate (a CA file that verifies the server) once it answers.
    pub fn start_https(&mut self, index: usize, port: u16) -> LabResult<PathBuf> {
        let rs = &self.topology.real_servers[index];
        let name = format!("{}-https", rs.name);
        let file = |what: &str| self.dir.join(format!("{name}-{what}"));
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let (ca, ca_key) = (file("ca.pem"), file("ca-key.pem"));
        let (cert, key, csr, ext) = (
            file("cert.pem"),
            file("key.pem"),
            file("csr.pem"),
            file("ext.cnf"),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut make_ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=xvs lab CA"];
        make_ca.extend(ec);
        let (ca_s, ca_key_s) = (text(&ca), text(&ca_key));
        make_ca.extend(["-keyout", &ca_key_s, "-out", &ca_s]);
        netns::run("openssl", &make_ca)?;
        let subject = format!("/CN={}", rs.name);
        let mut make_csr = vec!["req", "-subj", &subject];
        make_csr.extend(ec);
        let (key_s, csr_s, cert_s, ext_s) = (text(&key), text(&csr), text(&cert), text(&ext));
        make_csr.extend(["-keyout", &key_s, "-out", &csr_s]);
        netns::run("openssl", &make_csr)?;
        std::fs::write(&ext, format!("subjectAltName=IP:{}\n", rs.rip))
            .map_err(|e| LabError(format!("{}: {e}", ext.display())))?;
        netns::run(
            "openssl",
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr_s,
                "-CA",
                &ca_s,
                "-CAkey",
                &ca_key_s,
                "-CAcreateserial",
                "-extfile",
                &ext_s,
                "-out",
                &cert_s,
            ],
        )?;
        let mut command = rs.ns.command(servers::python());
        command
            .args(["-c", servers::HTTPS, &port.to_string()])
            .arg(self.dir.join(&rs.name))
            .args([&cert_s, &key_s]);
        let log = self.dir.join(format!("{name}.log"));
        self.helpers.spawn_named(&name, command, &log)?;
        let url = format!("https://127.0.0.1:{port}/");
        wait_for(&name, Duration::from_secs(10), || {
            rs.ns
                .exec("curl", &["-s", "-k", "--max-time", "1", &url])
                .is_ok()
        })?;
        Ok(ca)
    }

    /// Stops the HTTPS server of real server `index`.
    pub fn stop_https(&mut self, index: usize) -> LabResult<()> {
        let name = format!("{}-https", self.topology.real_servers[index].name);
        match self.helpers.kill(&name) {
            true => Ok(()),
            false => Err(LabError(format!("{name} does not run"))),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.director.stop();
        self.helpers.kill_all();
        // The topology's namespaces go when it drops, right after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new working directory for a lab (logs, sockets, configuration files):
/// `$TMPDIR/xvs-KIND-TAG`.
fn lab_dir(kind: &str) -> LabResult<PathBuf> {
    let dir = std::env::temp_dir().join(format!("xvs-{kind}-{}", netns::unique_tag()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A director's configuration file: its interfaces (one arm, or external then internal),
/// `queues = 1`, then `extra` (more `[daemon]` keys or whole sections, e.g. connection
/// sync), then `services` (TOML `[[service]]` tables, possibly empty).
pub fn config_text(ifaces: &[String], extra: &str, services: &str) -> String {
    let daemon = match ifaces {
        [one] => format!("interface = \"{one}\"\n"),
        [external, internal, ..] => {
            format!("external = \"{external}\"\ninternal = \"{internal}\"\n")
        }
        [] => String::new(),
    };
    let extra = if extra.is_empty() || extra.ends_with('\n') {
        extra.to_string()
    } else {
        format!("{extra}\n")
    };
    format!("[daemon]\n{daemon}queues = 1\n{extra}\n{services}")
}

/// A TOML `[[service]]` table: `protocol` (`tcp` or `udp`) VIP:PORT with `scheduler`, each
/// of `rips` a real server on the same port with `method` (`dr`, `nat`, `tun`), weight 1.
pub fn service_toml(
    protocol: &str,
    vip: &str,
    port: u16,
    scheduler: &str,
    rips: &[&str],
    method: &str,
) -> String {
    let mut text =
        format!("[[service]]\n{protocol} = \"{vip}:{port}\"\nscheduler = \"{scheduler}\"\n");
    for rip in rips {
        text.push_str(&format!(
            "\n[[service.real_server]]\naddress = \"{rip}:{port}\"\nmethod = \"{method}\"\n"
        ));
    }
    text
}

/// Starts on each real server its HTTP server (page: the server's name, in `dir`), TCP line
/// server and UDP server, and with `tunnel_source` (TUN) its decapsulators
/// ([`decapsulators`]); their output goes to `dir/NAME-PROGRAM.log`, and the servers are
/// kept in `children` as `NAME-PROGRAM` (`rs1-http`, ...). Returns once every HTTP server
/// answers and every decapsulator has its socket (its first report).
fn start_real_servers(
    real_servers: &[RealServerHost],
    tunnel_source: Option<(&str, Option<&str>)>,
    programs: &Programs,
    dir: &Path,
    children: &mut Children,
) -> LabResult<()> {
    for rs in real_servers {
        let name = &rs.name;
        let site = dir.join(name);
        std::fs::create_dir_all(&site).map_err(|e| LabError(e.to_string()))?;
        std::fs::write(site.join("index.html"), format!("{name}\n"))
            .map_err(|e| LabError(e.to_string()))?;
        for program in [
            ServerProgram::Http,
            ServerProgram::Lines,
            ServerProgram::Udp,
        ] {
            children.spawn_named(
                &program.child_name(name),
                server_command(rs, program, dir),
                &dir.join(format!("{}.log", program.child_name(name))),
            )?;
        }
        for (tunnel, source, me) in decapsulators(rs, tunnel_source) {
            let inner = if tunnel.inner_ipv6() { "ipv6" } else { "ipv4" };
            let mut decap = rs.ns.command(&programs.xvs.to_string_lossy());
            decap.args(["lab-decap", "--iface", &rs.dev, "--tun"]);
            decap.arg(format!("tun-{}", tunnel.name()));
            decap.args(["--source", source, "--me", me, "--inner", inner]);
            decap
                .arg("--report")
                .arg(decap_report_path(dir, name, tunnel));
            let log = dir.join(format!("{name}-decap-{}.log", tunnel.name()));
            children.spawn(decap, &log)?;
        }
    }
    // Ready when each answers on loopback from inside its namespace.
    for rs in real_servers {
        wait_ready(rs, ServerProgram::Http)?;
        for (tunnel, _, _) in decapsulators(rs, tunnel_source) {
            let report = decap_report_path(dir, &rs.name, tunnel);
            let what = format!("the {} decapsulator of {}", tunnel.name(), rs.name);
            wait_for(&what, Duration::from_secs(10), || report.exists())?;
        }
    }
    Ok(())
}

/// The decapsulators real server `rs` runs, each with its outer source and destination:
/// with `tunnel_source` (TUN: the director's IPv4 and, dual-stack, IPv6 address) IPIP, and
/// when both the director and `rs` have IPv6 every other kind too.
fn decapsulators<'a>(
    rs: &'a RealServerHost,
    tunnel_source: Option<(&'a str, Option<&'a str>)>,
) -> Vec<(decap::Tunnel, &'a str, &'a str)> {
    let Some((source, source6)) = tunnel_source else {
        return Vec::new();
    };
    match source6.zip(rs.rip6.as_deref()) {
        Some((source6, rip6)) => decap::Tunnel::ALL
            .into_iter()
            .map(|tunnel| match tunnel.outer_ipv6() {
                true => (tunnel, source6, rip6),
                false => (tunnel, source, rs.rip.as_str()),
            })
            .collect(),
        None => vec![(decap::Tunnel::Ipip, source, rs.rip.as_str())],
    }
}

/// Where real server `server`'s decapsulator for `tunnel` keeps its report.
fn decap_report_path(dir: &Path, server: &str, tunnel: decap::Tunnel) -> PathBuf {
    dir.join(format!("{server}-{}.decap", tunnel.name()))
}

/// The programs every real server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProgram {
    /// python's http.server on HTTP_PORT, serving the server's site directory.
    Http,
    /// The TCP line server on LINES_PORT.
    Lines,
    /// The UDP server on UDP_PORT.
    Udp,
}

impl ServerProgram {
    /// Its name among a lab's children: `rs1-http`, `rs1-lines`, `rs1-udp`.
    fn child_name(self, server: &str) -> String {
        let program = match self {
            ServerProgram::Http => "http",
            ServerProgram::Lines => "lines",
            ServerProgram::Udp => "udp",
        };
        format!("{server}-{program}")
    }
}

/// The command that runs `program` on `rs` (its site in `dir/NAME`).
fn server_command(rs: &RealServerHost, program: ServerProgram, dir: &Path) -> Command {
    let mut command = rs.ns.command(servers::python());
    let name = rs.name.as_str();
    // A dual-stack real server listens on both families (an IPv6 wildcard socket takes
    // IPv4 too).
    let any = if rs.rip6.is_some() { "::" } else { "0.0.0.0" };
    match program {
        ServerProgram::Http => {
            command
                .args([
                    "-m",
                    "http.server",
                    &HTTP_PORT.to_string(),
                    "--bind",
                    any,
                    "--directory",
                ])
                .arg(dir.join(name));
        }
        ServerProgram::Lines => {
            command.args(["-c", servers::TCP_LINES, name, &LINES_PORT.to_string(), any]);
        }
        ServerProgram::Udp => {
            command.args(["-c", servers::UDP_NAME, name, &UDP_PORT.to_string(), any]);
        }
    }
    command
}

/// Waits until `program` answers on `rs`'s loopback.
fn wait_ready(rs: &RealServerHost, program: ServerProgram) -> LabResult<()> {
    let what = program.child_name(&rs.name);
    let limit = Duration::from_secs(10);
    match program {
        ServerProgram::Http => {
            let url = format!("http://127.0.0.1:{HTTP_PORT}/");
            wait_for(&what, limit, || {
                rs.ns.exec("curl", &["-s", "--max-time", "1", &url]).is_ok()
            })
        }
        ServerProgram::Lines => wait_for(&what, limit, || {
            rs.ns
                .exec(
                    servers::python(),
                    &[
                        "-c",
                        "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)",
                        &LINES_PORT.to_string(),
                    ],
                )
                .is_ok()
        }),
        ServerProgram::Udp => wait_for(&what, limit, || {
            rs.ns
                .exec(
                    servers::python(),
                    &["-c", servers::UDP_ASK, "127.0.0.1", &UDP_PORT.to_string()],
                )
                .is_ok_and(|o| !o.stdout.is_empty())
        }),
    }
}

/// One HTTP GET from `client` to `http://VIP:HTTP_PORT/` (a new connection); the body.
pub fn http_get(client: &Namespace, vip: &str) -> LabResult<String> {
    let url = format!("http://{}/", host_port(vip, HTTP_PORT));
    let out = client.exec("curl", &["-s", "--max-time", "3", &url])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `host:port`, with an IPv6 host in brackets (`[2001:db8::10]:80`), as URLs and ipvsadm
/// write it.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Helper processes of a lab (servers, decapsulators), killed and reaped on drop; some
/// by name, to be stopped and started again by tests.
#[derive(Default)]
pub struct Children(Vec<(String, Child)>);

impl Children {
    /// Starts `command` with its output in `log` and keeps it.
    pub fn spawn(&mut self, command: Command, log: &Path) -> LabResult<()> {
        self.spawn_named("", command, log)
    }

    /// [`Children::spawn`], kept as `name`.
    pub fn spawn_named(&mut self, name: &str, command: Command, log: &Path) -> LabResult<()> {
        self.0.push((name.to_string(), spawn_logged(command, log)?));
        Ok(())
    }

    /// The process kept as `name`, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c.id())
    }

    /// Kills and reaps the process kept as `name`; whether there was one.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(at) = self.0.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (_, mut child) = self.0.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Kills and reaps every process.
    pub fn kill_all(&mut self) {
        for (_, mut child) in self.0.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// One `xvs run` daemon of a lab: `dir/NAME.toml` its configuration, `dir/NAME.sock` its
/// control socket, `dir/NAME.log` its output. Dropping it kills it if it still runs.
pub struct XvsDaemon {
    programs: Programs,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl XvsDaemon {
    /// A daemon named `name` with its files in `dir`, not started.
    pub fn new(programs: Programs, dir: &Path, name: &str) -> XvsDaemon {
        XvsDaemon {
            programs,
            config: dir.join(format!("{name}.toml")),
            socket: dir.join(format!("{name}.sock")),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Writes its configuration file (read at start and at SIGHUP).
    pub fn write_config(&self, text: &str) -> LabResult<()> {
        std::fs::write(&self.config, text)
            .map_err(|e| LabError(format!("{}: {e}", self.config.display())))
    }

    /// Starts `xvs run --config FILE --socket SOCK` in `ns` (logging at `info`) and returns
    /// once its control socket answers; fails with its log if it exits first.
    pub fn start(&mut self, ns: &Namespace) -> LabResult<()> {
        if self.child.is_some() {
            return Err(LabError("the director already runs".into()));
        }
        let mut command = ns.command(&self.programs.xvs.to_string_lossy());
        command.arg("run").arg("--config").arg(&self.config);
        command.arg("--socket").arg(&self.socket);
        command.env("RUST_LOG", "info");
        self.child = Some(spawn_logged(command, &self.log)?);
        let started = wait_for(
            "the director's control socket",
            Duration::from_secs(15),
            || self.exited().is_some() || self.xvsadm("-L -n").is_ok(),
        );
        if let Some(status) = self.exited() {
            self.child = None;
            return Err(LabError(format!(
                "the director exited ({status}): {}",
                self.log().trim()
            )));
        }
        started
    }

    /// Its exit status if it was started and has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Its process id while it runs (`ip netns exec` execs the program, so the child's pid
    /// is the daemon's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `xvsadm ARGS` (split on spaces) against it; the stdout.
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

    /// Sends `signal` (`HUP`, `TERM`, ...).
    pub fn signal(&self, signal: &str) -> LabResult<()> {
        let pid = self
            .pid()
            .ok_or_else(|| LabError("the director does not run".into()))?;
        netns::run("kill", &[&format!("-{signal}"), &pid.to_string()]).map(|_| ())
    }

    /// Stops it with SIGTERM and waits (10 s at most, then SIGKILL); its exit status.
    pub fn stop(&mut self) -> LabResult<std::process::ExitStatus> {
        self.end("TERM", Duration::from_secs(10))
    }

    /// Kills it with SIGKILL, as a crash would, and waits; its exit status.
    pub fn kill(&mut self) -> LabResult<std::process::ExitStatus> {
        self.end("KILL", Duration::from_secs(5))
    }

    fn end(&mut self, signal: &str, limit: Duration) -> LabResult<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| LabError("the director does not run".into()))?;
        end_child(&mut child, signal, limit).map_err(|e| LabError(format!("the director {e}")))
    }
}

impl Drop for XvsDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to `child` and waits `limit` for it to exit, then kills it; its status.
fn end_child(
    child: &mut Child,
    signal: &str,
    limit: Duration,
) -> LabResult<std::process::ExitStatus> {
    let _ = netns::run("kill", &[&format!("-{signal}"), &child.id().to_string()]);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| LabError(e.to_string()))? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError(format!(
                "did not exit within {limit:?} of SIG{signal}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// What a [`Conversation`] saw, from the client's side.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ConversationReport {
    /// The connection was established.
    pub connected: bool,
    /// Lines sent.
    pub sent: u64,
    /// Distinct lines answered.
    pub answered: u64,
    /// Lines sent and never answered.
    pub missing: u64,
    /// Answers whose number was not above every earlier answer's.
    pub out_of_order: u64,
    /// The real servers that answered, in order of first answer (`rs1`, `rs2`).
    pub servers: Vec<String>,
    /// The connection was reset (ECONNRESET, EPIPE).
    pub reset: bool,
    /// The server side closed the connection.
    pub closed: bool,
    /// Any other failure (connect, unexpected answer, socket error).
    pub error: Option<String>,
    /// The longest time between two consecutive answers, in ms.
    pub longest_gap_ms: f64,
    /// From the last answer (or the start) to the end of sending, in ms: how long the
    /// conversation had been silent when it ended.
    pub silent_at_end_ms: f64,
}

/// A long-lived conversation: the client sends a numbered line to VIP:LINES_PORT every 50
/// ms for a while and reads every answer (`servers::CONVERSATION`). Runs on its own; see
/// [`Conversation::finish`]. Dropping it kills the client.
pub struct Conversation {
    run: ScriptRun,
}

impl Conversation {
    /// Starts it from `client` to `vip`, sending for `duration`.
    pub fn start(client: &Namespace, vip: &str, duration: Duration) -> LabResult<Conversation> {
        let mut command = client.command(servers::python());
        command.args([
            "-c",
            servers::CONVERSATION,
            vip,
            &LINES_PORT.to_string(),
            &format!("{:.3}", duration.as_secs_f64()),
        ]);
        let run = ScriptRun::spawn(
            command,
            "conversation",
            |line, answered| {
                let is_answer = line.starts_with("answer ");
                if is_answer {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                is_answer
            },
            // Connecting (3 s at most), sending, the 1 s grace, and some slack.
            duration + Duration::from_secs(10),
        )?;
        Ok(Conversation { run })
    }

    /// Answers received so far.
    pub fn answered(&self) -> u64 {
        self.run.answered()
    }

    /// Waits until `n` answers have come, for `limit` at most.
    pub fn wait_answered(&self, n: u64, limit: Duration) -> LabResult<()> {
        self.run.wait_answered(n, limit)
    }

    /// Waits for the conversation to end and returns its report.
    pub fn finish(self) -> LabResult<ConversationReport> {
        self.run.finish()
    }
}

/// A client script run in a namespace that prints progress lines while it runs and, last,
/// its report as one JSON line: the long-lived conversations of the labs' tests. Dropping it
/// kills the script.
pub(crate) struct ScriptRun {
    child: Child,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    reader: Option<std::thread::JoinHandle<String>>,
    ends: Instant,
    what: &'static str,
}

impl ScriptRun {
    /// Starts `command` (its stdout is read here); `progress` takes each line and returns
    /// true if it was a progress line (it may update the answer count), false for a line
    /// that may be the report. The script must end within `limit`.
    pub(crate) fn spawn(
        mut command: Command,
        what: &'static str,
        progress: fn(&str, &std::sync::atomic::AtomicU64) -> bool,
        limit: Duration,
    ) -> LabResult<ScriptRun> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LabError(format!("cannot start the {what}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LabError(format!("the {what} has no stdout")))?;
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = answered.clone();
        let reader = std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !progress(&line, &counter) {
                    last = line;
                }
            }
            last
        });
        Ok(ScriptRun {
            child,
            answered,
            reader: Some(reader),
            ends: Instant::now() + limit,
            what,
        })
    }

    /// Answers received so far.
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` answers have come, for `limit` at most.
    pub(crate) fn wait_answered(&self, n: u64, limit: Duration) -> LabResult<()> {
        let what = format!("{n} answers in the {}", self.what);
        wait_for(&what, limit, || self.answered() >= n)
    }

    /// Waits for the script to end and parses its report.
    pub(crate) fn finish<R: serde::de::DeserializeOwned>(mut self) -> LabResult<R> {
        let what = self.what;
        loop {
            if self
                .child
                .try_wait()
                .map_err(|e| LabError(e.to_string()))?
                .is_some()
            {
                break;
            }
            if Instant::now() > self.ends {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(LabError(format!("the {what} did not end in time")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let last = self
            .reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default();
        serde_json::from_str(&last)
            .map_err(|e| LabError(format!("the report of the {what} {last:?}: {e}")))
    }
}

impl Drop for ScriptRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Starts `command` with no input and its output (stdout and stderr) appended to the file
/// `log` (a restarted program adds to its earlier log).
fn spawn_logged(mut command: Command, log: &Path) -> LabResult<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| LabError(e.to_string()))?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError(format!("cannot start {command:?}: {e}")))
}

/// What `xvs lab` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabReport {
    /// Answers per real server name (failed requests under "(no answer)").
    pub answers: BTreeMap<String, u32>,
    /// `xvsadm -L -n --stats` at the end.
    pub stats: String,
}

/// `xvs lab`: the seed lab for `mode`, `requests` HTTP requests through the VIP; with
/// `ipv6`, the dual-stack lab and its IPv6 VIP (`xvs lab --ipv6`).
pub fn run(
    mode: Mode,
    scheduler: &str,
    requests: u32,
    ipv6: bool,
    programs: Programs,
    stop: &std::sync::atomic::AtomicBool,
) -> LabResult<LabReport> {
    let lab = if ipv6 {
        let lab = Lab::start_dual_stack(mode, programs)?;
        lab.add_service6("-t", HTTP_PORT, scheduler, None, &[1, 1])?;
        lab
    } else {
        let lab = Lab::start(mode, programs)?;
        lab.add_service("-t", HTTP_PORT, scheduler, None, &[1, 1])?;
        lab
    };
    let mut report = LabReport::default();
    for _ in 0..requests {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LabError("interrupted".into()));
        }
        let body = if ipv6 {
            lab.http_get6()
        } else {
            lab.http_get()
        }
        .unwrap_or_default();
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
