//! `xvs run`: the daemon's control side, and the seam where the dataplane plugs in.
//!
//! What is wired here:
//! - the configuration: `--config FILE` ([`crate::config`]) with `--iface/--queues/--cores`
//!   and `--socket` on top; without a file the daemon starts with an empty table for
//!   xvsadm to fill, as operators do with ipvsadm;
//! - the control socket ([`crate::control`]) on its own thread, serving a
//!   [`DataplaneDirector`]: every xvsadm edit goes through [`TableOnlyDirector`] (IPVS's
//!   rules and ipvsadm's messages) and, when accepted, to the [`Dataplane`];
//! - signals: SIGHUP reloads the file (an invalid, missing or empty file, or one without
//!   services while services run, is refused with one log line per problem and the
//!   running configuration stays), SIGTERM and SIGINT stop the control socket and the
//!   dataplane and return, also while the dataplane is still starting;
//! - health checks ([`crate::health`]): one thread per checked real server and one walking
//!   the connection table for passive detection, reporting to the [`DataplaneDirector`],
//!   which publishes the operator's table with the checks' decisions laid over it;
//! - logging through `tracing` (set up by the binary, `RUST_LOG` filters).
//!
//! Packets are the [`Dataplane`]'s: the seam through which the AF_XDP runtime
//! (`crate::forwarding::AfXdpDataplane`) receives each accepted table (compiled with the
//! dataplane's snapshot builder in [`Dataplane::update`]) and fills counters and connections
//! into listings ([`Dataplane::fill`]). [`ControlOnly`] stands in for `xvs run
//! --control-only` and tests: it forwards nothing, says so in the log, and lists every
//! counter as zero, because it counted nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use xvs_dataplane::service::spec::{EditError, ServiceAddr, ServiceTableSpec};

use crate::config::{self, DaemonConfig, Interfaces, LoadedConfig, SyncConfig};
use crate::control::{self, ControlServer};
use crate::director::{
    DaemonArgs, Director, Edit, EditFailure, ListRequest, NO_ANNOUNCE, NO_SYNC, TableOnlyDirector,
};
use crate::health::runner::{Checkers, PassiveSink, PassiveWalker, ReportCheck};
use crate::health::spec::CheckSpec;
use crate::health::{DestKey, Health, HealthConfig};
use crate::listing::{ListData, ServiceEntry, Timeouts};
use crate::metrics::{AnnounceMetrics, BackendHealth, DataplaneMetrics, MetricsServer, Scrape};
use xvs_conntrack::ConnTable;
use xvs_dataplane::sync::Role;

/// `xvs run`'s arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--iface` (once: one arm; twice: external then internal).
    pub ifaces: Vec<String>,
    /// `--queues`.
    pub queues: Option<u32>,
    /// `--cores`.
    pub cores: Option<Vec<usize>>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file is invalid.
    #[error("{path}: {errors}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        errors: config::ConfigErrors,
    },
    /// The command-line arguments do not fit.
    #[error("{0}")]
    Args(String),
    /// The control socket could not be bound.
    #[error("control socket {path}: {source}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("signals: {0}")]
    Signals(std::io::Error),
    /// The metrics endpoint could not listen.
    #[error("metrics.listen {listen}: {source}")]
    Metrics {
        /// The address.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The dataplane refused to start.
    #[error("dataplane: {0}")]
    Dataplane(String),
}

/// The packet-forwarding half of the daemon, as the control side sees it.
pub trait Dataplane: Send + 'static {
    /// Starts forwarding with the first configuration (before the control socket opens).
    fn start(
        &mut self,
        config: &DaemonConfig,
        table: &ServiceTableSpec,
        timeouts: &Timeouts,
    ) -> Result<(), String>;

    /// Whether the dataplane can serve `table` (valid by IPVS's rules already). An edit or a
    /// reload it refuses is refused as a whole, with this one-line reason, and changes nothing.
    fn check(&self, table: &ServiceTableSpec) -> Result<(), String>;

    /// The table or the timeouts changed (an xvsadm edit, `--set`, a SIGHUP reload):
    /// publish them to the workers. The table passed [`Dataplane::check`].
    fn update(&mut self, table: &ServiceTableSpec, timeouts: &Timeouts);

    /// Adds what only the dataplane knows to a listing: counters, rates, ActiveConn /
    /// InActConn / PersistConn, and for [`ListRequest::Connections`] the connections.
    fn fill(&self, what: &ListRequest, data: &mut ListData);

    /// `-Z`: zeroes the counters of one service (known to exist) or all.
    fn zero(&mut self, service: Option<&ServiceAddr>);

    /// The dataplane's own numbers for the metrics endpoint (totals, workers, ports, drops,
    /// connection table, sync); `None` when it forwards nothing. Called on the metrics
    /// thread under the director lock: it must only read counters.
    fn metrics(&self) -> Option<DataplaneMetrics> {
        None
    }

    /// A reload's `[defense]` and `[icmp]` settings (SYN-flood defence of the connection
    /// table, limits of the ICMP errors the director sends).
    fn set_flood_limits(&mut self, _config: &DaemonConfig) {}

    /// A reload's `[[mark]]` rules (already valid): the fwmark services' traffic. Connections
    /// keep their real servers. A dataplane that classifies nothing ignores them.
    fn set_mark_rules(&mut self, _rules: &[xvs_model::mark::MarkRule]) -> Result<(), String> {
        Ok(())
    }

    /// Stops forwarding (SIGTERM/SIGINT).
    fn stop(&mut self);

    /// `--start-daemon ROLE`: ipvsadm's message on refusal.
    fn start_daemon(&mut self, _role: Role, _args: &DaemonArgs) -> Result<(), String> {
        Err(NO_SYNC.to_string())
    }

    /// `--stop-daemon ROLE`.
    fn stop_daemon(&mut self, _role: Role) -> Result<(), String> {
        Err(NO_SYNC.to_string())
    }

    /// The file's `[sync]` section, at start and when a reload changes it: both daemons and
    /// the options become what it says (checked first: on error nothing changes).
    fn configure_sync(&mut self, _sync: &SyncConfig) -> Result<(), String> {
        Ok(())
    }

    /// The connection table, for passive health detection's walks (`None`: no table).
    fn conn_table(&self) -> Option<ConnTable> {
        None
    }

    /// Whether this director forwards: `Err(reason)` when a worker stopped or an interface
    /// is down (the VIP announcement withdraws then, see [`crate::announce`]).
    fn forwarding_health(&self) -> Result<(), String> {
        Err("no dataplane forwards (--control-only)".into())
    }
}

/// The stand-in [`Dataplane`] while none is plugged in: forwards nothing, counts nothing,
/// and refuses what the AF_XDP dataplane refuses (fwmark services), with its
/// words, so a table tried with `--control-only` is one the real daemon takes.
#[derive(Debug, Default)]
pub struct ControlOnly;

impl Dataplane for ControlOnly {
    fn check(&self, table: &ServiceTableSpec) -> Result<(), String> {
        xvs_dataplane::service::snapshot::check_supported(table).map_err(|e| e.to_string())
    }

    fn start(
        &mut self,
        config: &DaemonConfig,
        table: &ServiceTableSpec,
        _timeouts: &Timeouts,
    ) -> Result<(), String> {
        self.check(table)?;
        tracing::warn!(
            interfaces = ?config.interfaces,
            services = table.services.len(),
            "no dataplane in this build: xvs serves xvsadm but forwards no packets"
        );
        Ok(())
    }

    fn update(&mut self, table: &ServiceTableSpec, timeouts: &Timeouts) {
        tracing::info!(
            services = table.services.len(),
            tcp = timeouts.tcp,
            tcpfin = timeouts.tcpfin,
            udp = timeouts.udp,
            "configuration changed"
        );
    }

    fn fill(&self, _what: &ListRequest, _data: &mut ListData) {}

    fn zero(&mut self, _service: Option<&ServiceAddr>) {}

    fn stop(&mut self) {}
}

/// The daemon's [`Director`]: [`TableOnlyDirector`] decides every edit, the [`Dataplane`]
/// receives the result and adds its counters to listings.
///
/// The core holds the operator's table (the file and xvsadm's edits); the dataplane gets,
/// and listings show, the table in force: the operator's with the health checks'
/// decisions laid over it ([`Health::effective`]).
#[derive(Debug)]
pub struct DataplaneDirector<P: Dataplane> {
    core: TableOnlyDirector,
    dataplane: P,
    /// The `[sync]` section last applied from the file: a reload applies it again only if
    /// it changed, so daemons started with xvsadm survive reloads that leave it alone.
    file_sync: SyncConfig,
    health: Health,
    /// The table in force, as last published.
    effective: ServiceTableSpec,
    /// Scale-out: what the announcer shares (drain switch, VIPs held), and the file's
    /// `drain` as last applied (a reload applies the file's value only when it changed, so
    /// `xvs drain` lasts).
    drain: Option<(Arc<crate::announce::Announced>, bool)>,
}

impl<P: Dataplane> DataplaneDirector<P> {
    /// Joins the edit core and the dataplane (no health checks).
    pub fn new(core: TableOnlyDirector, dataplane: P) -> Self {
        let effective = core.table().clone();
        DataplaneDirector {
            core,
            dataplane,
            file_sync: SyncConfig::default(),
            health: Health::default(),
            effective,
            drain: None,
        }
    }

    /// With the announcer's shared state (its drain switch is the file's `drain`).
    pub fn with_announce(mut self, shared: Arc<crate::announce::Announced>) -> Self {
        let file = shared.drained.load(Ordering::Relaxed);
        self.drain = Some((shared, file));
        self
    }

    /// A reload's `[announce] drain`: applied if it differs from the file's last value.
    pub fn reload_drain(&mut self, file_drain: bool) {
        if let Some((switch, last)) = &mut self.drain
            && *last != file_drain
        {
            *last = file_drain;
            switch.drained.store(file_drain, Ordering::Relaxed);
            tracing::info!(drained = file_drain, "announce.drain changed by the reload");
        }
    }

    /// What the VIP announcer asks every period: the IPv4 VIPs in force and whether the
    /// dataplane forwards.
    pub fn announce_status(&self) -> crate::announce::Status {
        let mut vips: Vec<std::net::Ipv4Addr> = self
            .effective
            .services
            .iter()
            .filter_map(|s| match s.addr {
                ServiceAddr::Inet {
                    addr: std::net::IpAddr::V4(v4),
                    ..
                } => Some(v4),
                _ => None,
            })
            .collect();
        vips.sort_unstable();
        vips.dedup();
        crate::announce::Status {
            vips,
            health: self.dataplane.forwarding_health(),
        }
    }

    /// With the health checks of `health`; the dataplane was started with
    /// `health.effective(core.table())`.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        let effective = self.health.effective(self.core.table());
        self.health.committed(self.core.table(), &effective);
        self.effective = effective;
        self
    }

    /// The health settings in force (what the check threads run).
    pub fn health_config(&self) -> &HealthConfig {
        self.health.config()
    }

    /// The table in force: the configured one with the health checks' decisions.
    pub fn effective(&self) -> &ServiceTableSpec {
        &self.effective
    }

    /// Counts one check's outcome; a transition publishes the changed table.
    pub fn record_check(&mut self, key: &DestKey, spec: &CheckSpec, outcome: Result<(), String>) {
        if self
            .health
            .record(key, spec, outcome, self.core.table(), Instant::now())
        {
            self.publish_health();
        }
    }

    /// One walk's connections in SYN_RECV for passive detection; a change publishes.
    pub fn observe_passive(&mut self, seen: &HashMap<DestKey, Vec<Instant>>, now: Instant) {
        if self.health.observe_passive(seen, self.core.table(), now) {
            self.publish_health();
        }
    }

    /// Publishes what a health change made of the table, if anything.
    fn publish_health(&mut self) {
        let effective = self.health.effective(self.core.table());
        if effective == self.effective {
            return;
        }
        if let Err(reason) = self.dataplane.check(&effective) {
            tracing::error!("health: the change cannot be applied: {reason}");
            return;
        }
        self.publish();
    }

    /// Applies the file's `[sync]` section if it differs from the one applied last.
    pub fn reload_sync(&mut self, sync: &SyncConfig) -> Result<(), String> {
        if *sync == self.file_sync {
            return Ok(());
        }
        self.dataplane.configure_sync(sync)?;
        self.file_sync = sync.clone();
        Ok(())
    }

    /// Applies a reload's `[[mark]]` rules.
    pub fn reload_marks(&mut self, rules: &[xvs_model::mark::MarkRule]) -> Result<(), String> {
        self.dataplane.set_mark_rules(rules)
    }

    /// Applies a reload's `[defense]` and `[icmp]` settings.
    pub fn reload_flood_limits(&mut self, config: &DaemonConfig) {
        self.dataplane.set_flood_limits(config);
    }

    /// The configured table.
    pub fn table(&self) -> &ServiceTableSpec {
        self.core.table()
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.core.timeouts()
    }

    /// The dataplane.
    pub fn dataplane(&self) -> &P {
        &self.dataplane
    }

    /// Replaces table and timeouts (SIGHUP) and publishes them, unless the dataplane cannot
    /// serve the table: then nothing changes and the reason is returned. The health
    /// settings stay.
    pub fn reload(&mut self, table: ServiceTableSpec, timeouts: Timeouts) -> Result<(), String> {
        let health = self.health.config().clone();
        self.reload_with_health(table, timeouts, health)
    }

    /// [`DataplaneDirector::reload`] with new health settings too: unchanged checks keep
    /// their state ([`Health::reconfigure`]).
    pub fn reload_with_health(
        &mut self,
        table: ServiceTableSpec,
        timeouts: Timeouts,
        health: HealthConfig,
    ) -> Result<(), String> {
        let mut next = self.health.clone();
        next.reconfigure(health, Instant::now());
        self.dataplane.check(&next.effective(&table))?;
        self.health = next;
        self.core.replace(table, timeouts);
        self.publish();
        Ok(())
    }

    /// Stops the dataplane.
    pub fn stop(&mut self) {
        self.dataplane.stop();
    }

    /// What the metrics endpoint shows, read at one moment: the listing of `-L -n --stats`
    /// and the dataplane's own numbers.
    pub fn scrape(&self) -> Scrape {
        let services = self
            .list(&ListRequest::Services)
            .map(|data| data.services)
            .unwrap_or_default();
        let mut health: Vec<BackendHealth> = self
            .health
            .states()
            .map(|(key, up)| BackendHealth {
                service: key.service,
                addr: key.addr,
                port: key.port,
                up,
            })
            .collect();
        health.sort_by_key(|h| (h.service, h.addr, h.port));
        let announce = self.drain.as_ref().map(|(shared, _)| {
            let held = shared.held();
            AnnounceMetrics {
                drained: shared.drained.load(Ordering::Relaxed),
                vips: self
                    .announce_status()
                    .vips
                    .into_iter()
                    .map(|vip| (vip, held.contains(&vip)))
                    .collect(),
            }
        });
        Scrape {
            services,
            dataplane: self.dataplane.metrics(),
            health,
            announce,
        }
    }

    /// The first edit after which the dataplane refuses the table (for `-R`'s line number).
    fn first_refused(&self, edits: &[Edit]) -> usize {
        (0..edits.len())
            .find(|&k| {
                let mut trial = self.core.clone();
                trial.apply_batch(&edits[..=k]).is_ok()
                    && self
                        .dataplane
                        .check(&self.health.effective(trial.table()))
                        .is_err()
            })
            .unwrap_or(0)
    }

    fn publish(&mut self) {
        let timeouts = self.core.timeouts();
        let effective = self.health.effective(self.core.table());
        self.health.committed(&self.effective, &effective);
        self.effective = effective;
        self.dataplane.update(&self.effective, &timeouts);
    }
}

impl<P: Dataplane> Director for DataplaneDirector<P> {
    fn apply_batch(&mut self, edits: &[Edit]) -> Result<(), EditFailure> {
        let mut trial = self.core.clone();
        trial.apply_batch(edits)?;
        if let Err(message) = self.dataplane.check(&self.health.effective(trial.table())) {
            return Err(EditFailure {
                index: self.first_refused(edits),
                message,
            });
        }
        self.core = trial;
        self.publish();
        Ok(())
    }

    fn list(&self, what: &ListRequest) -> Result<ListData, EditError> {
        let mut data = self.core.list(what)?;
        // What is in force, with each real server's health for --json.
        let now = Instant::now();
        for entry in &mut data.services {
            if let Some(service) = self.effective.service(&entry.addr) {
                *entry = ServiceEntry::from_spec(service);
            }
            self.health.annotate(entry, self.core.table(), now);
        }
        self.dataplane.fill(what, &mut data);
        Ok(data)
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), EditError> {
        self.core.set_timeouts(timeouts)?;
        self.publish();
        Ok(())
    }

    fn zero(&mut self, service: Option<&ServiceAddr>) -> Result<(), EditError> {
        self.core.zero(service)?;
        self.dataplane.zero(service);
        Ok(())
    }

    fn start_daemon(&mut self, role: Role, args: &DaemonArgs) -> Result<(), String> {
        self.dataplane.start_daemon(role, args)
    }

    fn stop_daemon(&mut self, role: Role) -> Result<(), String> {
        self.dataplane.stop_daemon(role)
    }

    fn set_drained(&mut self, drained: bool) -> Result<(), String> {
        let (shared, _) = self.drain.as_ref().ok_or(NO_ANNOUNCE)?;
        shared.drained.store(drained, Ordering::Relaxed);
        tracing::info!(drained, "xvs drain");
        Ok(())
    }
}

/// The configuration `xvs run` starts with: the file if any, command-line flags on top.
pub fn initial_config(args: &RunArgs) -> Result<LoadedConfig, DaemonError> {
    let mut loaded = match &args.config {
        Some(path) => config::load(path).map_err(|errors| DaemonError::Config {
            path: path.clone(),
            errors,
        })?,
        None => LoadedConfig::default(),
    };
    let d = &mut loaded.daemon;
    match args.ifaces.as_slice() {
        [] => {}
        [iface] => {
            d.interfaces = Some(Interfaces::OneArm {
                iface: iface.clone(),
            })
        }
        [external, internal] => {
            d.interfaces = Some(Interfaces::TwoArm {
                external: external.clone(),
                internal: internal.clone(),
            })
        }
        _ => {
            return Err(DaemonError::Args(
                "--iface: give one interface (one arm) or two (external, internal)".into(),
            ));
        }
    }
    if let Some(q) = args.queues {
        if q == 0 {
            return Err(DaemonError::Args("--queues: must be at least 1".into()));
        }
        d.queues = Some(q);
    }
    if let Some(cores) = &args.cores {
        d.cores = Some(cores.clone());
    }
    Ok(loaded)
}

/// SIGHUP: reads `path` again; a valid file replaces services and timeouts, an invalid one
/// is refused and logged, and the running configuration stays. Returns whether it applied.
pub fn reload<P: Dataplane>(path: &Path, director: &Mutex<DataplaneDirector<P>>) -> bool {
    match config::load(path) {
        Ok(loaded) => {
            let mut d = director.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(reason) = loaded.reload_refusal(d.table().services.len()) {
                tracing::error!(file = %path.display(), "reload refused, configuration unchanged: {reason}");
                return false;
            }
            if let Err(reason) =
                d.reload_with_health(loaded.table, loaded.daemon.timeouts, loaded.health)
            {
                tracing::error!(file = %path.display(), "reload refused, the running configuration stays: {reason}");
                return false;
            }
            if let Err(reason) = d.reload_marks(&loaded.daemon.marks) {
                tracing::error!(file = %path.display(), "mark rules refused, the running ones stay: {reason}");
            }
            if let Err(reason) = d.reload_sync(&loaded.daemon.sync) {
                tracing::error!(file = %path.display(), "sync settings refused, the running sync daemons stay: {reason}");
            }
            // [announce] device, addresses and interval change on restart; drain at once.
            d.reload_drain(loaded.daemon.announce.as_ref().is_some_and(|a| a.drain));
            d.reload_flood_limits(&loaded.daemon);
            tracing::info!(
                file = %path.display(),
                services = d.table().services.len(),
                checks = d.health_config().checks().count(),
                "reloaded (interfaces, queues, cores, worker_nice, socket, conn_table_size and metrics.listen change on restart only)"
            );
            true
        }
        Err(errors) => {
            for line in &errors.0 {
                tracing::error!(file = %path.display(), "reload refused, configuration unchanged: {line}");
            }
            false
        }
    }
}

fn lock<P: Dataplane>(
    director: &Mutex<DataplaneDirector<P>>,
) -> std::sync::MutexGuard<'_, DataplaneDirector<P>> {
    director.lock().unwrap_or_else(|p| p.into_inner())
}

/// The check threads' callback: the director's lock is held only to count the outcome
/// (and, on a transition, to publish the table).
fn check_reports<P: Dataplane>(director: &Arc<Mutex<DataplaneDirector<P>>>) -> ReportCheck {
    let director = Arc::clone(director);
    Arc::new(move |key, spec, outcome| lock(&director).record_check(key, spec, outcome))
}

/// The announcer's question, answered under the director's lock (a short one: it reads
/// the table in force and the workers' and interfaces' state).
fn announce_status<P: Dataplane>(
    director: &Arc<Mutex<DataplaneDirector<P>>>,
) -> Arc<crate::announce::StatusFn> {
    let director = Arc::clone(director);
    Arc::new(move || lock(&director).announce_status())
}

/// Passive detection's walks, reported to the director.
struct PassiveReports<P: Dataplane>(Arc<Mutex<DataplaneDirector<P>>>);

impl<P: Dataplane> PassiveSink for PassiveReports<P> {
    fn wanted(&self) -> bool {
        lock(&self.0).health_config().any_passive()
    }

    fn observe(&self, seen: &HashMap<DestKey, Vec<Instant>>, now: Instant) {
        lock(&self.0).observe_passive(seen, now);
    }
}

/// How the dataplane's start ended.
enum Started<P> {
    /// It runs; `hup`: a SIGHUP came meanwhile.
    Running { dataplane: P, hup: Option<i32> },
    /// SIGTERM or SIGINT came first.
    Stopped,
}

/// Starts the dataplane on a thread of its own while this one answers signals, so a
/// SIGTERM or SIGINT during a slow start (a large connection table, a slow driver) stops
/// the daemon at once instead of after the start: the start is abandoned, and what it set
/// up goes with the process (XDP links, AF_XDP sockets and the TUN device are file
/// descriptors, which the kernel releases at exit; nothing was bound to the control
/// socket yet).
fn start_or_stop<P: Dataplane>(
    mut dataplane: P,
    config: &DaemonConfig,
    table: &ServiceTableSpec,
    timeouts: &Timeouts,
    signals: &mut Signals,
) -> Result<Started<P>, DaemonError> {
    let (done_tx, done) = std::sync::mpsc::channel();
    let (config, table, timeouts) = (config.clone(), table.clone(), *timeouts);
    std::thread::Builder::new()
        .name("xvs-start".into())
        .spawn(move || {
            let result = dataplane.start(&config, &table, &timeouts);
            let _ = done_tx.send(result.map(|()| dataplane));
        })
        .map_err(|e| DaemonError::Dataplane(format!("cannot start a thread: {e}")))?;
    let mut hup = None;
    loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => hup = Some(SIGHUP),
                _ => {
                    tracing::info!(signal, "stopping during start-up (the start is abandoned)");
                    return Ok(Started::Stopped);
                }
            }
        }
        match done.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(Ok(dataplane)) => return Ok(Started::Running { dataplane, hup }),
            Ok(Err(reason)) => return Err(DaemonError::Dataplane(reason)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(DaemonError::Dataplane("the start panicked".to_string()));
            }
        }
    }
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT.
pub fn run<P: Dataplane>(args: RunArgs, dataplane: P) -> Result<(), DaemonError> {
    let loaded = initial_config(&args)?;
    let socket = control::socket_path(args.socket.as_deref(), loaded.daemon.socket.as_deref());
    // Install the handlers first, so a signal during start-up is not the default action.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(DaemonError::Signals)?;

    // Bound before anything starts, so an address in use changes nothing.
    let mut metrics = match loaded.daemon.metrics.listen {
        Some(listen) => Some(
            MetricsServer::bind(listen)
                .map_err(|source| DaemonError::Metrics { listen, source })?,
        ),
        None => None,
    };

    let timeouts = loaded.daemon.timeouts;
    // Checks that start down hold their servers out from the first packet on.
    let health = Health::new(loaded.health.clone(), Instant::now());
    let first = health.effective(&loaded.table);
    let (dataplane, hup_during_start) =
        match start_or_stop(dataplane, &loaded.daemon, &first, &timeouts, &mut signals)? {
            Started::Running { dataplane, hup } => (dataplane, hup),
            Started::Stopped => return Ok(()),
        };
    let conn_table = dataplane.conn_table();
    let core = TableOnlyDirector::new(loaded.table, timeouts)
        .with_conn_table_size(loaded.daemon.conn_table_size);
    let mut director = DataplaneDirector::new(core, dataplane).with_health(health);
    director
        .reload_sync(&loaded.daemon.sync)
        .map_err(DaemonError::Dataplane)?;
    // Scale-out: the VIPs on the announce device while this director forwards.
    let announced = Arc::new(crate::announce::Announced::new(
        loaded.daemon.announce.as_ref().is_some_and(|a| a.drain),
    ));
    if loaded.daemon.announce.is_some() {
        director = director.with_announce(announced.clone());
    }
    let director = Arc::new(Mutex::new(director));
    let mut announcer = match &loaded.daemon.announce {
        Some(config) => Some(
            crate::announce::Announcer::start(config, announced, announce_status(&director))
                .map_err(|e| {
                    DaemonError::Dataplane(format!("announce.device {}: {e}", config.device))
                })?,
        ),
        None => None,
    };
    let mut checkers = Checkers::new(check_reports(&director));
    checkers.follow(&loaded.health);
    let _passive = match conn_table {
        Some(table) => {
            match PassiveWalker::spawn(table, Arc::new(PassiveReports(director.clone()))) {
                Ok(walker) => Some(walker),
                Err(e) => {
                    tracing::error!("health: cannot start passive detection: {e}");
                    None
                }
            }
        }
        None => None,
    };
    if !checkers.is_empty() {
        tracing::info!(checks = checkers.len(), "health checks running");
    }

    if let Some(metrics) = metrics.as_mut() {
        let listen = metrics.local_addr();
        let scraped = Arc::clone(&director);
        metrics
            .serve(move || scraped.lock().unwrap_or_else(|p| p.into_inner()).scrape())
            .map_err(|source| DaemonError::Metrics { listen, source })?;
        tracing::info!(%listen, "metrics at http://{listen}/metrics");
    }

    let server = ControlServer::bind(&socket).map_err(|source| DaemonError::Socket {
        path: socket.clone(),
        source,
    })?;
    let stop = server.stop_handle();
    let serving = Arc::clone(&director);
    let control_thread = std::thread::Builder::new()
        .name("xvs-control".into())
        .spawn(move || server.serve(serving))
        .map_err(|source| DaemonError::Socket {
            path: socket.clone(),
            source,
        })?;
    tracing::info!(socket = %socket.display(), config = ?args.config, "xvs running");

    // A SIGHUP during start-up reloads now: the file may have changed after it was read.
    for signal in hup_during_start.into_iter().chain(signals.forever()) {
        match signal {
            SIGHUP => match &args.config {
                Some(path) => {
                    reload(path, &director);
                    let health = lock(&director).health_config().clone();
                    checkers.follow(&health);
                }
                None => tracing::warn!("SIGHUP: no --config file to reload"),
            },
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    // Withdraw first, and forward a while longer: the router moves the flows elsewhere
    // before this director stops taking them.
    if let (Some(announcer), Some(config)) = (announcer.as_mut(), &loaded.daemon.announce) {
        announcer.stop();
        let grace = std::time::Duration::from_millis(u64::from(config.stop_grace_ms));
        tracing::info!(
            ?grace,
            "VIPs withdrawn; still forwarding for the grace period"
        );
        std::thread::sleep(grace);
    }
    stop.stop();
    checkers.stop();
    if control_thread.join().is_err() {
        tracing::error!("control thread panicked");
    }
    if let Some(mut metrics) = metrics.take() {
        metrics.stop();
    }
    director.lock().unwrap_or_else(|p| p.into_inner()).stop();
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Names;
    use xvs_dataplane::service::spec::{Protocol, ServiceSpec};

    /// Records what the control side told it.
    #[derive(Debug, Default)]
    struct Recorder {
        updates: Vec<usize>,
        zeroed: usize,
        syncs: Vec<SyncConfig>,
    }

    impl Dataplane for Recorder {
        fn start(
            &mut self,
            _: &DaemonConfig,
            _: &ServiceTableSpec,
            _: &Timeouts,
        ) -> Result<(), String> {
            Ok(())
        }
        fn check(&self, _: &ServiceTableSpec) -> Result<(), String> {
            Ok(())
        }
        fn update(&mut self, table: &ServiceTableSpec, _: &Timeouts) {
            self.updates.push(table.services.len());
        }
        fn fill(&self, _: &ListRequest, data: &mut ListData) {
            for s in &mut data.services {
                s.stats.conns = 42;
            }
        }
        fn zero(&mut self, _: Option<&ServiceAddr>) {
            self.zeroed += 1;
        }
        fn stop(&mut self) {}
        fn configure_sync(&mut self, sync: &SyncConfig) -> Result<(), String> {
            if sync.policy.threshold == 49 {
                return Err("refused".into());
            }
            self.syncs.push(sync.clone());
            Ok(())
        }
    }

    #[test]
    fn drain_is_refused_without_an_announcer_and_a_reload_applies_only_a_changed_value() {
        let mut plain = DataplaneDirector::new(TableOnlyDirector::default(), Recorder::default());
        assert_eq!(plain.set_drained(true), Err(NO_ANNOUNCE.to_string()));
        let shared = Arc::new(crate::announce::Announced::new(false));
        let switch = &shared.drained;
        let mut d = DataplaneDirector::new(TableOnlyDirector::default(), Recorder::default())
            .with_announce(shared.clone());
        assert_eq!(d.set_drained(true), Ok(()));
        assert!(switch.load(Ordering::Relaxed), "xvs drain");
        d.reload_drain(false);
        assert!(
            switch.load(Ordering::Relaxed),
            "the file still says false: xvs drain lasts"
        );
        assert_eq!(
            d.scrape().announce,
            Some(AnnounceMetrics {
                drained: true,
                vips: Vec::new()
            }),
            "the metrics say so"
        );
        d.reload_drain(true);
        d.reload_drain(false);
        assert!(!switch.load(Ordering::Relaxed), "the file changed to false");
        assert_eq!(plain.scrape().announce, None, "no [announce], no metrics");
        assert_eq!(
            d.announce_status().health,
            Err("no dataplane forwards (--control-only)".to_string()),
            "a dataplane that does not say it forwards is unhealthy"
        );
    }

    #[test]
    fn a_reload_applies_the_sync_section_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        let director = Mutex::new(DataplaneDirector::new(
            TableOnlyDirector::default(),
            Recorder::default(),
        ));
        let with_sync = "[sync]\nresync = true\n[sync.backup]\ninterface = \"eth0\"\n";
        std::fs::write(&path, with_sync).unwrap();
        assert!(reload(&path, &director));
        assert!(reload(&path, &director), "same file again");
        assert_eq!(
            director.lock().unwrap().dataplane().syncs.len(),
            1,
            "applied once"
        );
        std::fs::write(&path, "service = []\n").unwrap();
        assert!(reload(&path, &director));
        let syncs = director.lock().unwrap().dataplane().syncs.clone();
        assert_eq!(syncs.len(), 2);
        assert!(syncs[0].resync && syncs[0].backup.is_some());
        assert_eq!(
            syncs[1],
            SyncConfig::default(),
            "a section removed stops the daemons"
        );
    }

    #[test]
    fn a_failed_check_publishes_weight_0_and_the_operators_table_stays() {
        let text = "[[service]]\ntcp = \"10.0.0.1:80\"\n[service.check]\ntype = \"tcp\"\n\
                    [[service.real_server]]\naddress = \"10.0.1.1\"\nweight = 4\n";
        let loaded = config::parse_str(text, &Names::none()).unwrap();
        let (key, spec) = loaded.health.checks().next().unwrap().clone();
        let mut d = DataplaneDirector::new(
            TableOnlyDirector::new(loaded.table, loaded.daemon.timeouts),
            Recorder::default(),
        )
        .with_health(Health::new(loaded.health.clone(), Instant::now()));
        let listed = |d: &DataplaneDirector<Recorder>| {
            let data = d.list(&ListRequest::Services).unwrap();
            let dest = data.services[0].dests[0].clone();
            (dest.weight, dest.check.map(|c| c.state))
        };
        assert_eq!(listed(&d), (4, Some("up".to_string())));
        d.record_check(&key, &spec, Err("connect: refused".into()));
        assert_eq!(d.dataplane().updates.len(), 1, "published once");
        assert_eq!(listed(&d), (0, Some("down".to_string())));
        assert_eq!(d.effective().services[0].dests[0].weight, 0);
        assert_eq!(
            d.table().services[0].dests[0].weight,
            4,
            "the operator's table"
        );
        d.record_check(&key, &spec, Err("connect: refused".into()));
        assert_eq!(
            d.dataplane().updates.len(),
            1,
            "no change, nothing published"
        );
        d.record_check(&key, &spec, Ok(()));
        assert_eq!(listed(&d), (4, Some("up".to_string())));
        assert_eq!(d.dataplane().updates.len(), 2);
    }

    fn vip() -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
    }

    #[test]
    fn dataplane_sees_only_accepted_changes() {
        let mut d = DataplaneDirector::new(TableOnlyDirector::default(), Recorder::default());
        d.apply(Edit::AddService {
            service: ServiceSpec::new(vip()),
        })
        .unwrap();
        assert!(
            d.apply(Edit::AddService {
                service: ServiceSpec::new(vip())
            })
            .is_err()
        );
        assert_eq!(
            d.dataplane().updates,
            vec![1],
            "the refused edit published nothing"
        );
        assert_eq!(
            d.list(&ListRequest::Services).unwrap().services[0]
                .stats
                .conns,
            42
        );
        assert!(
            d.zero(Some(&ServiceAddr::Fwmark {
                mark: 1,
                ipv6: false
            }))
            .is_err()
        );
        d.zero(None).unwrap();
        assert_eq!(d.dataplane().zeroed, 1);
    }

    /// A dataplane that cannot serve IPv6 fwmark services (a stand-in for whatever a
    /// dataplane refuses in its `check`).
    #[derive(Debug, Default)]
    struct NoFwmark {
        updates: usize,
    }

    impl Dataplane for NoFwmark {
        fn start(
            &mut self,
            _: &DaemonConfig,
            _: &ServiceTableSpec,
            _: &Timeouts,
        ) -> Result<(), String> {
            Ok(())
        }
        fn check(&self, table: &ServiceTableSpec) -> Result<(), String> {
            match table
                .services
                .iter()
                .any(|s| matches!(s.addr, ServiceAddr::Fwmark { ipv6: true, .. }))
            {
                true => Err("IPv6 fwmark services are not served".to_string()),
                false => Ok(()),
            }
        }
        fn update(&mut self, _: &ServiceTableSpec, _: &Timeouts) {
            self.updates += 1;
        }
        fn fill(&self, _: &ListRequest, _: &mut ListData) {}
        fn zero(&mut self, _: Option<&ServiceAddr>) {}
        fn stop(&mut self) {}
    }

    #[test]
    fn what_the_dataplane_cannot_serve_is_refused_whole_and_changes_nothing() {
        let mut d = DataplaneDirector::new(TableOnlyDirector::default(), NoFwmark::default());
        let fwmark = ServiceAddr::Fwmark {
            mark: 7,
            ipv6: true,
        };
        let edits = [
            Edit::AddService {
                service: ServiceSpec::new(vip()),
            },
            Edit::AddService {
                service: ServiceSpec::new(fwmark),
            },
        ];
        let failure = d.apply_batch(&edits).unwrap_err();
        assert_eq!(
            (failure.index, failure.message.as_str()),
            (1, "IPv6 fwmark services are not served")
        );
        assert!(d.table().services.is_empty(), "all or nothing");
        assert_eq!(d.dataplane().updates, 0);
        let mut refused = ServiceTableSpec::default();
        refused.add_service(ServiceSpec::new(fwmark)).unwrap();
        assert!(d.reload(refused, Timeouts::default()).is_err());
        assert!(d.table().services.is_empty());
        d.apply_batch(&edits[..1]).unwrap();
        assert_eq!((d.table().services.len(), d.dataplane().updates), (1, 1));
        // The IPv4 form of the mark is served.
        d.apply_batch(&[Edit::AddService {
            service: ServiceSpec::new(ServiceAddr::Fwmark {
                mark: 7,
                ipv6: false,
            }),
        }])
        .unwrap();
        assert_eq!((d.table().services.len(), d.dataplane().updates), (2, 2));
    }

    #[test]
    fn control_only_accepts_fwmark_services_of_both_families_as_the_afxdp_dataplane() {
        use crate::daemon::Dataplane as _;
        let afxdp = crate::forwarding::AfXdpDataplane::default();
        let mut d = DataplaneDirector::new(TableOnlyDirector::default(), ControlOnly);
        for line in [
            "-A -f 7 -6 -s rr",
            "-a -f 7 -6 -r [2001:db8::2]:0 -g",
            "-A -f 7",
        ] {
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let crate::ipvsadm::Command::Edit(edit) =
                crate::ipvsadm::parse(&words, "xvsadm", &Names::none()).unwrap()
            else {
                panic!("{line}")
            };
            d.apply(edit).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        }
        assert_eq!(d.table().services.len(), 2);
        assert_eq!(afxdp.check(d.table()), Ok(()));
        assert_eq!(
            ControlOnly.start(&DaemonConfig::default(), d.table(), &Timeouts::default()),
            Ok(())
        );
    }

    #[test]
    fn ipv6_services_pass_the_dataplane_check_beside_ipv4_ones() {
        use crate::daemon::Dataplane as _;
        let afxdp = crate::forwarding::AfXdpDataplane::default();
        let mut d = DataplaneDirector::new(TableOnlyDirector::default(), ControlOnly);
        for line in [
            "-A -t [2001:db8::10]:80 -s rr",
            "-a -t [2001:db8::10]:80 -r [2001:db8::2]:80 -g",
            "-a -t [2001:db8::10]:80 -r [fd00::3]:8080 -m",
            "-A -u [2001:db8::10]:53 -s sh -p 600 -M 64",
            "-a -u [2001:db8::10]:53 -r [2001:db8::4]:53 -i",
            "-A -t 10.0.0.1:80 -s rr",
        ] {
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let crate::ipvsadm::Command::Edit(edit) =
                crate::ipvsadm::parse(&words, "xvsadm", &Names::none()).unwrap()
            else {
                panic!("{line}")
            };
            d.apply_batch(std::slice::from_ref(&edit)).unwrap();
        }
        assert_eq!(d.table().services.len(), 3);
        assert_eq!(afxdp.check(d.table()), Ok(()));
        assert_eq!(
            ControlOnly.start(&DaemonConfig::default(), d.table(), &Timeouts::default()),
            Ok(())
        );
    }

    #[test]
    fn reload_keeps_the_running_table_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        std::fs::write(&path, include_str!("../examples/dr.toml")).unwrap();
        let loaded = initial_config(&RunArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        let director = Mutex::new(DataplaneDirector::new(
            TableOnlyDirector::new(loaded.table, loaded.daemon.timeouts),
            Recorder::default(),
        ));
        std::fs::write(&path, include_str!("../examples/nat.toml")).unwrap();
        assert!(reload(&path, &director));
        let nat = config::parse_str(include_str!("../examples/nat.toml"), &Names::none()).unwrap();
        assert_eq!(director.lock().unwrap().table(), &nat.table);
        std::fs::write(&path, "[[service]]\ntcp = \"bad\"\n").unwrap();
        assert!(!reload(&path, &director));
        assert_eq!(director.lock().unwrap().table(), &nat.table);
    }

    #[test]
    fn a_reload_of_an_empty_missing_or_serviceless_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        std::fs::write(&path, include_str!("../examples/dr.toml")).unwrap();
        let loaded = config::load(&path).unwrap();
        let director = Mutex::new(DataplaneDirector::new(
            TableOnlyDirector::new(loaded.table.clone(), loaded.daemon.timeouts),
            Recorder::default(),
        ));
        let unchanged = |director: &Mutex<DataplaneDirector<Recorder>>| {
            let d = director.lock().unwrap();
            d.table() == &loaded.table && d.dataplane().updates.is_empty()
        };
        for text in ["", "\n# nothing yet\n", "[daemon]\ninterface = \"eth1\"\n"] {
            std::fs::write(&path, text).unwrap();
            assert!(!reload(&path, &director), "{text:?}");
            assert!(unchanged(&director), "{text:?}");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(!reload(&path, &director), "missing");
        assert!(unchanged(&director));
        // Said explicitly, no services is a valid configuration.
        // (At the top: under a [section] header the key would be that section's.)
        std::fs::write(&path, "service = []\n[daemon]\ninterface = \"eth1\"\n").unwrap();
        assert!(reload(&path, &director));
        assert!(director.lock().unwrap().table().services.is_empty());
        assert_eq!(director.lock().unwrap().dataplane().updates, vec![0]);
    }

    #[test]
    fn reload_refusals_say_what_to_write() {
        let empty = LoadedConfig::default();
        assert_eq!(
            empty.reload_refusal(0).unwrap(),
            "the file is empty: a reload would remove every service; write `service = []` to mean no services"
        );
        let daemon_only =
            config::parse_str("[daemon]\ninterface = \"eth1\"\n", &Names::none()).unwrap();
        assert_eq!(
            daemon_only.reload_refusal(0),
            None,
            "nothing would be removed"
        );
        assert_eq!(
            daemon_only.reload_refusal(2).unwrap(),
            "the file has no [[service]]: a reload would remove the 2 running service(s); write `service = []` to mean no services"
        );
        let none = config::parse_str("service = []\n", &Names::none()).unwrap();
        assert_eq!(none.reload_refusal(5), None);
    }

    /// A dataplane whose start takes a minute (as a very large connection table can).
    struct SlowStart;

    const START_BEGAN: &str = "slow start began";
    const CHILD: &str = "XVS_DAEMON_TEST_CHILD";

    impl Dataplane for SlowStart {
        fn start(
            &mut self,
            _: &DaemonConfig,
            _: &ServiceTableSpec,
            _: &Timeouts,
        ) -> Result<(), String> {
            println!("{START_BEGAN}");
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        fn check(&self, _: &ServiceTableSpec) -> Result<(), String> {
            Ok(())
        }
        fn update(&mut self, _: &ServiceTableSpec, _: &Timeouts) {}
        fn fill(&self, _: &ListRequest, _: &mut ListData) {}
        fn zero(&mut self, _: Option<&ServiceAddr>) {}
        fn stop(&mut self) {}
    }

    #[test]
    fn a_sigterm_during_a_slow_start_stops_at_once() {
        use std::io::BufRead;
        const TEST: &str = "daemon::tests::a_sigterm_during_a_slow_start_stops_at_once";
        if let Some(dir) = std::env::var_os(CHILD) {
            // The child: signals go to this process only.
            let result = run(
                RunArgs {
                    socket: Some(PathBuf::from(dir).join("xvs.sock")),
                    ..Default::default()
                },
                SlowStart,
            );
            println!("run returned {result:?}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(START_BEGAN) {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "child ended early");
        }
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill has no memory preconditions; `pid` is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let asked = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if asked.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("still starting 20 s after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(status.success(), "{status:?} {rest}");
        assert!(rest.contains("run returned Ok(())"), "{rest}");
        assert!(!dir.path().join("xvs.sock").exists(), "never served");
    }

    #[test]
    fn flags_override_the_file() {
        let loaded = initial_config(&RunArgs {
            ifaces: vec!["veth0".into(), "veth1".into()],
            queues: Some(4),
            cores: Some(vec![1]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            loaded.daemon.interfaces,
            Some(Interfaces::TwoArm {
                external: "veth0".into(),
                internal: "veth1".into()
            })
        );
        assert_eq!(loaded.daemon.queues, Some(4));
        assert!(loaded.table.services.is_empty());
        assert!(
            initial_config(&RunArgs {
                ifaces: vec!["a".into(), "b".into(), "c".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
