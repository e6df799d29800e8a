//! The daemon's TOML configuration file, read with the `config` crate and validated into a
//! [`DaemonConfig`] and the [`ServiceTableSpec`] it starts with.
//!
//! Services are written as ipvsadm would be told them (`tcp = "vip:port"`, `scheduler`,
//! `persistent`, `netmask`, `flags`, real servers with `method` and `weight`), and they are
//! built through the very same path as `xvsadm`: each service and real server becomes an
//! ipvsadm command line, parsed by [`crate::ipvsadm`] and applied as an [`Edit`], so the
//! file obeys ipvsadm's rules and refuses with ipvsadm's messages. Every error names its
//! key (`service[1].real_server[0]: Destination already exists`); all of them are
//! reported, one per line. The keys, with examples, are documented in crates/cli/README.md.
//!
//! The file is read strictly ([`read`]): UTF-8 text only, TOML's types as written (no
//! string-to-number coercion), and no byte of the file repeated unescaped in a message.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xvs_dataplane::service::spec::{DestSpec, ServiceAddr, ServiceTableSpec};

use crate::announce::AnnounceConfig;
use crate::defense;
use crate::director::{DaemonArgs, Edit};
use crate::health::spec::{
    self as health, DestKey, HealthConfig, RawCheck, RawPassive, ServiceHealth,
};
use crate::ipvsadm::{self, Command, MAX_TIMEOUT};
use crate::listing::{DEFAULT_CONN_TABLE_SIZE, Timeouts};
use crate::names::Names;
use crate::spelling::MethodWords;
use xvs_conntrack::{Defense, SyncPolicy};
use xvs_dataplane::icmp_limit::IcmpLimits;
use xvs_dataplane::service::marks::check_mark_rules;
use xvs_model::Protocol;
use xvs_model::mark::{MarkRule, PortRange, Prefix};

pub mod read;

/// Which interfaces xvs drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// One arm: clients and real servers on the same interface (DR, TUN, NAT on a stick).
    OneArm {
        /// The interface.
        iface: String,
    },
    /// Two arms: clients on `external`, real servers on `internal` (classic NAT).
    TwoArm {
        /// Towards the clients.
        external: String,
        /// Towards the real servers.
        internal: String,
    },
}

/// IPVS's sysctl-like behaviour switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorOptions {
    /// `expire_nodest_conn`: drop a connection's entry at its next packet once its real
    /// server was removed (instead of letting it time out).
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`: expire persistence templates that point at a real
    /// server with weight 0.
    pub expire_quiescent_template: bool,
    /// `sloppy_tcp` (scale-out): schedule a mid-flow TCP packet of an unknown flow instead of
    /// dropping it, for every service; `[[service]] sloppy_tcp` asks for one service only.
    pub sloppy_tcp: bool,
    /// `sloppy_sctp`: IPVS's name, refused when set (xvs has no SCTP services).
    pub sloppy_sctp: bool,
}

/// Everything about the daemon that is not the service table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The interfaces, unless left to `--iface`.
    pub interfaces: Option<Interfaces>,
    /// RX/TX queue pairs per interface (one worker each), unless left to `--queues`.
    pub queues: Option<u32>,
    /// CPU cores for the workers, unless left to `--cores`.
    pub cores: Option<Vec<usize>>,
    /// The workers' nice value (`worker_nice`, -20 to 19; 0 by default): the kernel forwards
    /// in softirq, ahead of every process on its CPU, while a worker sharing its cores with
    /// other work is time-shared with it; a negative value gives the workers (and only them,
    /// not the control plane) precedence. Applied at start.
    pub worker_nice: i32,
    /// The control socket, unless left to `--socket`/`XVS_SOCKET`/the default.
    pub socket: Option<PathBuf>,
    /// The director's own address: the outer source of TUN (IPIP) packets.
    pub director_address: Option<IpAddr>,
    /// IPVS's connection table size (`size=` in listings); the dataplane sizes its table
    /// from it. A power of two, 256 ..= 2^26.
    pub conn_table_size: u32,
    /// `--set tcp tcpfin udp` values to start with.
    pub timeouts: Timeouts,
    /// Behaviour switches.
    pub options: DirectorOptions,
    /// Connection sync daemons (`[sync]`).
    pub sync: SyncConfig,
    /// The Prometheus endpoint (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Scale-out: hold the VIPs for a BGP daemon to announce (`[announce]`), if present.
    pub announce: Option<AnnounceConfig>,
    /// SYN-flood defence of the connection table (`[defense]`, see [`crate::defense`]).
    pub defense: Defense,
    /// Rate limits of the ICMP errors the director sends (`[icmp]`).
    pub icmp: IcmpLimits,
    /// `[[mark]]`: the rules that give packets the firewall marks `-f` services serve.
    pub marks: Vec<MarkRule>,
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `listen`: where `GET /metrics` is served; `None` (the default): no endpoint.
    pub listen: Option<SocketAddr>,
}

/// The `[sync]` section: the daemons `--start-daemon` would start, IPVS's `sync_threshold`,
/// and xvs's additions (bulk resync, an HMAC key, unicast peers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncConfig {
    /// `[sync.master]`.
    pub master: Option<DaemonArgs>,
    /// `[sync.backup]`.
    pub backup: Option<DaemonArgs>,
    /// `threshold`, `period`: IPVS's `sync_threshold` ("3 50").
    pub policy: SyncPolicy,
    /// `resync`: a starting backup asks for the whole table; a master answers.
    pub resync: bool,
    /// `key` or `key_file`: authenticate messages with HMAC-SHA256.
    pub key: Option<Vec<u8>>,
    /// `peers`: unicast instead of multicast.
    pub peers: Vec<IpAddr>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interfaces: None,
            queues: None,
            cores: None,
            worker_nice: 0,
            socket: None,
            director_address: None,
            conn_table_size: DEFAULT_CONN_TABLE_SIZE,
            timeouts: Timeouts::default(),
            options: DirectorOptions::default(),
            sync: SyncConfig::default(),
            metrics: MetricsConfig::default(),
            announce: None,
            defense: defense::default_defense(),
            icmp: IcmpLimits::default(),
            marks: Vec::new(),
        }
    }
}

/// A validated configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedConfig {
    /// The daemon's settings.
    pub daemon: DaemonConfig,
    /// The services to start with.
    pub table: ServiceTableSpec,
    /// The real servers' health checks, sorry servers and passive detection.
    pub health: HealthConfig,
    /// Whether the file says which services there are: `[[service]]` tables, or
    /// `service = []` for none. A reload of a file that does not is refused while services
    /// run, so a truncated file cannot remove them all.
    pub services_given: bool,
}

/// What is wrong with a file: one line per problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl LoadedConfig {
    /// Why a reload of this file must not replace a running configuration with
    /// `running_services` services: an empty file (a truncated write, a wrong path's empty
    /// file) or one without a `service` key would remove every service. An operator who
    /// means none writes `service = []`.
    pub fn reload_refusal(&self, running_services: usize) -> Option<String> {
        if self.services_given {
            return None;
        }
        let explicit = "write `service = []` to mean no services";
        if *self == LoadedConfig::default() {
            return Some(format!(
                "the file is empty: a reload would remove every service; {explicit}"
            ));
        }
        (running_services > 0).then(|| {
            format!(
                "the file has no [[service]]: a reload would remove the {running_services} running service(s); {explicit}"
            )
        })
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The problems, each made safe for a log line ([`read::escaped`]).
    pub fn new(lines: Vec<String>) -> Self {
        ConfigErrors(lines.iter().map(|l| read::escaped(l)).collect())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    daemon: RawDaemon,
    timeouts: RawTimeouts,
    options: DirectorOptions,
    sync: RawSync,
    metrics: RawMetrics,
    defense: defense::RawDefense,
    icmp: defense::RawIcmp,
    announce: Option<RawAnnounce>,
    mark: Vec<RawMark>,
    service: Option<Vec<RawService>>,
}

/// `[[mark]]`: every key required, each of its TOML type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMark {
    mark: u32,
    protocol: String,
    destination: String,
    ports: Vec<RawPorts>,
}

/// One entry of `ports`: a port (a number) or a `"FIRST-LAST"` range (a string).
#[derive(Debug)]
enum RawPorts {
    Port(i64),
    Range(String),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPorts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or a \"FIRST-LAST\" range")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPorts, E> {
                Ok(RawPorts::Port(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPorts, E> {
                Ok(RawPorts::Port(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts::Range(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Scale-out's `[announce]` (see [`crate::announce`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAnnounce {
    device: Option<String>,
    addresses: Vec<String>,
    drain: bool,
    interval_ms: Option<u32>,
    stop_grace_ms: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSync {
    master: Option<RawSyncDaemon>,
    backup: Option<RawSyncDaemon>,
    threshold: Option<u32>,
    period: Option<u32>,
    resync: bool,
    key: Option<String>,
    key_file: Option<PathBuf>,
    peers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSyncDaemon {
    interface: Option<String>,
    syncid: Option<u32>,
    maxlen: Option<u32>,
    group: Option<String>,
    port: Option<u32>,
    ttl: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    interface: Option<String>,
    external: Option<String>,
    internal: Option<String>,
    queues: Option<u32>,
    cores: Option<Vec<usize>>,
    worker_nice: Option<i32>,
    socket: Option<PathBuf>,
    director_address: Option<String>,
    conn_table_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    tcp: Option<u32>,
    tcpfin: Option<u32>,
    udp: Option<u32>,
}

/// `persistent`: `true` (ipvsadm's `-p` alone), `false`, or seconds.
#[derive(Debug)]
enum Persistent {
    On(bool),
    Seconds(u32),
}

impl<'de> Deserialize<'de> for Persistent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Persistent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or seconds")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Persistent, E> {
                Ok(Persistent::On(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Persistent, E> {
                u32::try_from(v)
                    .map(Persistent::Seconds)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Persistent, E> {
                u32::try_from(v)
                    .map(Persistent::Seconds)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `netmask`: a dotted IPv4 mask, or an IPv6 prefix length (written `64` or `"64"`).
#[derive(Debug)]
struct Netmask(String);

impl<'de> Deserialize<'de> for Netmask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Netmask;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mask or a prefix length")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Netmask, E> {
                Ok(Netmask(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Netmask, E> {
                match v {
                    1..=128 => Ok(Netmask(v.to_string())),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawService {
    tcp: Option<String>,
    udp: Option<String>,
    fwmark: Option<u32>,
    ipv6: bool,
    scheduler: Option<String>,
    flags: Option<String>,
    persistent: Option<Persistent>,
    netmask: Option<Netmask>,
    ops: bool,
    mh_table_size: Option<u32>,
    /// Scale-out: this service's `sloppy_tcp` (else `[options] sloppy_tcp` decides).
    sloppy_tcp: bool,
    /// The check of every real server that has none of its own.
    check: Option<RawCheck>,
    on_failure: Option<String>,
    sorry_server: Option<String>,
    sorry_method: Option<String>,
    passive_check: Option<RawPassive>,
    real_server: Vec<RawRealServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRealServer {
    address: String,
    method: Option<String>,
    weight: Option<u32>,
    upper_threshold: Option<u32>,
    lower_threshold: Option<u32>,
    check: Option<RawCheck>,
}

/// Reads and validates `path` (host and port names from /etc/hosts and /etc/services).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = read::read_text(path).map_err(|e| ConfigErrors::new(vec![e]))?;
    parse_str(&text, &Names::system())
}

/// Validates the text of a TOML file.
pub fn parse_str(text: &str, names: &Names) -> Result<LoadedConfig, ConfigErrors> {
    let one = |e| ConfigErrors::new(vec![e]);
    read::check_text(text).map_err(one)?;
    let raw: RawConfig = read::from_toml(text).map_err(one)?;
    validate(raw, names).map_err(|ConfigErrors(lines)| ConfigErrors::new(lines))
}

fn validate(raw: RawConfig, names: &Names) -> Result<LoadedConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let mut daemon = DaemonConfig::default();

    let d = raw.daemon;
    daemon.interfaces = match (d.interface, d.external, d.internal) {
        (None, None, None) => None,
        (Some(iface), None, None) => Some(Interfaces::OneArm { iface }),
        (None, Some(external), Some(internal)) => {
            if external == internal {
                errors.push(
                    "daemon.internal: must differ from daemon.external (or use daemon.interface)"
                        .to_string(),
                );
            }
            Some(Interfaces::TwoArm { external, internal })
        }
        (Some(_), _, _) => {
            errors.push(
                "daemon.interface: give either daemon.interface (one arm) or daemon.external and daemon.internal (two arms), not both"
                    .to_string(),
            );
            None
        }
        (None, _, _) => {
            errors.push(
                "daemon.external, daemon.internal: a two-arm director needs both".to_string(),
            );
            None
        }
    };
    if d.queues == Some(0) {
        errors.push("daemon.queues: must be at least 1".to_string());
    }
    daemon.queues = d.queues;
    if d.cores.as_ref().is_some_and(Vec::is_empty) {
        errors.push("daemon.cores: list at least one core, or leave it out".to_string());
    }
    daemon.cores = d.cores;
    if let Some(nice) = d.worker_nice {
        if (-20..=19).contains(&nice) {
            daemon.worker_nice = nice;
        } else {
            errors.push(format!(
                "daemon.worker_nice: {nice} is not allowed (a nice value from -20 to 19)"
            ));
        }
    }
    daemon.socket = d.socket;
    if let Some(text) = d.director_address {
        match text.parse::<IpAddr>() {
            Ok(a) => daemon.director_address = Some(a),
            Err(_) => errors.push(format!(
                "daemon.director_address: '{text}' is not an IP address"
            )),
        }
    }
    if let Some(size) = d.conn_table_size {
        if !size.is_power_of_two() || !(256..=1 << 26).contains(&size) {
            errors.push(format!(
                "daemon.conn_table_size: {size} must be a power of two from 256 to 67108864"
            ));
        } else {
            daemon.conn_table_size = size;
        }
    }

    let defaults = Timeouts::default();
    let mut timeout = |key: &str, value: Option<u32>, default: u32| -> u32 {
        match value {
            None => default,
            Some(v) if (1..=MAX_TIMEOUT).contains(&v) => v,
            Some(v) => {
                errors.push(format!(
                    "timeouts.{key}: {v} is outside 1..={MAX_TIMEOUT} seconds"
                ));
                default
            }
        }
    };
    daemon.timeouts = Timeouts {
        tcp: timeout("tcp", raw.timeouts.tcp, defaults.tcp),
        tcpfin: timeout("tcpfin", raw.timeouts.tcpfin, defaults.tcpfin),
        udp: timeout("udp", raw.timeouts.udp, defaults.udp),
    };
    daemon.options = raw.options;
    if daemon.options.sloppy_sctp {
        errors.push("options.sloppy_sctp: xvs has no SCTP services (sloppy_tcp is for TCP)".into());
    }
    daemon.sync = sync_config(raw.sync, &mut errors);
    daemon.defense = defense::defense(raw.defense, &mut errors);
    daemon.icmp = defense::icmp(raw.icmp, &mut errors);
    if let Some(text) = raw.metrics.listen {
        match text.parse::<SocketAddr>() {
            Ok(addr) => daemon.metrics.listen = Some(addr),
            Err(_) => errors.push(format!(
                "metrics.listen: '{text}' is not ADDRESS:PORT (e.g. 127.0.0.1:9111 or [::1]:9111)"
            )),
        }
    }

    daemon.announce = raw.announce.map(|a| announce_config(a, &mut errors));
    daemon.marks = mark_rules(raw.mark, &mut errors);

    let mut table = ServiceTableSpec::default();
    let mut health = HealthConfig::default();
    let services_given = raw.service.is_some();
    for (i, service) in raw.service.into_iter().flatten().enumerate() {
        add_service(&mut table, &mut health, i, service, names, &mut errors);
    }
    if errors.is_empty() {
        Ok(LoadedConfig {
            daemon,
            table,
            health,
            services_given,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `[[mark]]`: each key checked on its own (all problems reported), then the rules together
/// (no port with two marks, within the data path's bounds) once each is well formed.
fn mark_rules(raw: Vec<RawMark>, errors: &mut Vec<String>) -> Vec<MarkRule> {
    let before = errors.len();
    let mut rules = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let key = format!("mark[{i}]");
        if m.mark == 0 {
            errors.push(format!(
                "{key}.mark: 0 is not allowed (a number from 1 to 4294967295; 0 means unmarked)"
            ));
        }
        let protocol = match m.protocol.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            other => {
                errors.push(format!(
                    "{key}.protocol: '{other}' is not allowed (a string: tcp or udp)"
                ));
                None
            }
        };
        let destination = match m.destination.parse::<Prefix>() {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(format!(
                    "{key}.destination: {e} (a string such as \"192.0.2.10\", \"192.0.2.0/24\" or \"2001:db8::/64\")"
                ));
                None
            }
        };
        if m.ports.is_empty() {
            errors.push(format!(
                "{key}.ports: the list is empty (ports and \"FIRST-LAST\" ranges such as [80, 443, \"8000-8100\"]; \"1-65535\" for all)"
            ));
        }
        let mut ports = Vec::new();
        for (j, p) in m.ports.iter().enumerate() {
            let parsed = match p {
                RawPorts::Port(n) => u16::try_from(*n)
                    .map_err(|_| format!("{n} is not a port (1 to 65535)"))
                    .and_then(|n| PortRange::new(n, n)),
                RawPorts::Range(text) => text.parse::<PortRange>(),
            };
            match parsed {
                Ok(r) => ports.push(r),
                Err(e) => errors.push(format!("{key}.ports[{j}]: {e}")),
            }
        }
        if let (Some(protocol), Some(destination)) = (protocol, destination) {
            rules.push(MarkRule {
                mark: m.mark,
                protocol,
                destination,
                ports,
            });
        }
    }
    if errors.len() == before
        && let Err(e) = check_mark_rules(&rules)
    {
        errors.push(e);
    }
    rules
}

/// `[announce]`: a device name the kernel accepts, IPv4 VIPs, a period of 10 ms to 10 s, a
/// stop grace of at most a minute.
fn announce_config(raw: RawAnnounce, errors: &mut Vec<String>) -> AnnounceConfig {
    let mut out = AnnounceConfig {
        drain: raw.drain,
        ..AnnounceConfig::default()
    };
    if let Some(device) = raw.device {
        if device.is_empty() || device.len() >= 16 || device.contains(['/', ' ']) {
            errors.push(format!(
                "announce.device: '{device}' is not an interface name (1 to 15 characters, no '/' or space)"
            ));
        } else {
            out.device = device;
        }
    }
    for a in raw.addresses {
        match a.parse::<std::net::Ipv4Addr>() {
            Ok(v) => out.addresses.push(v),
            Err(_) => errors.push(format!("announce.addresses: '{a}' is not an IPv4 address")),
        }
    }
    match raw.interval_ms {
        Some(ms) if !(10..=10_000).contains(&ms) => {
            errors.push(format!("announce.interval_ms: {ms} is outside 10..=10000"))
        }
        Some(ms) => out.interval_ms = ms,
        None => {}
    }
    match raw.stop_grace_ms {
        Some(ms) if ms > 60_000 => {
            errors.push(format!("announce.stop_grace_ms: {ms} is outside 0..=60000"))
        }
        Some(ms) => out.stop_grace_ms = ms,
        None => {}
    }
    out
}

/// `[sync]`, with ipvsadm's ranges for each daemon's options.
fn sync_config(raw: RawSync, errors: &mut Vec<String>) -> SyncConfig {
    let mut out = SyncConfig::default();
    let daemon = |role: &str, d: RawSyncDaemon, errors: &mut Vec<String>| {
        let mut range = |key: &str, v: Option<u32>, min: u32, max: u32| -> Option<u32> {
            let v = v?;
            if (min..=max).contains(&v) {
                Some(v)
            } else {
                errors.push(format!("sync.{role}.{key}: {v} is outside {min}..={max}"));
                None
            }
        };
        let args = DaemonArgs {
            interface: d.interface,
            syncid: range("syncid", d.syncid, 0, 255).map(|v| v as u8),
            maxlen: range("maxlen", d.maxlen, 44, 65_535 - 28).map(|v| v as u16),
            group: None,
            port: range("port", d.port, 1, 65_535).map(|v| v as u16),
            ttl: range("ttl", d.ttl, 1, 255).map(|v| v as u8),
        };
        let group = match d.group.map(|g| (g.parse::<std::net::Ipv4Addr>(), g)) {
            None => None,
            Some((Ok(a), _)) if a.is_multicast() => Some(a),
            Some((_, g)) => {
                errors.push(format!(
                    "sync.{role}.group: '{g}' is not an IPv4 multicast address"
                ));
                None
            }
        };
        DaemonArgs { group, ..args }
    };
    out.master = raw.master.map(|d| daemon("master", d, errors));
    out.backup = raw.backup.map(|d| daemon("backup", d, errors));
    let defaults = SyncPolicy::default();
    out.policy = SyncPolicy {
        threshold: raw.threshold.unwrap_or(defaults.threshold),
        period: raw.period.unwrap_or(defaults.period),
    };
    // IPVS: "0 <= threshold < period", a period of 0 syncs once at the threshold.
    if out.policy.period != 0 && out.policy.threshold >= out.policy.period {
        errors.push(format!(
            "sync.threshold: {} must be below sync.period ({})",
            out.policy.threshold, out.policy.period
        ));
    }
    out.resync = raw.resync;
    out.key = match (raw.key, raw.key_file) {
        (Some(_), Some(_)) => {
            errors.push("sync.key, sync.key_file: give one of them".to_string());
            None
        }
        (Some(k), None) => Some(k.into_bytes()),
        (None, Some(path)) => match std::fs::read(&path) {
            Ok(k) => Some(k.trim_ascii().to_vec()),
            Err(e) => {
                errors.push(format!("sync.key_file: {}: {e}", path.display()));
                None
            }
        },
        (None, None) => None,
    };
    if out.key.as_ref().is_some_and(|k| k.len() < 16) {
        errors.push("sync.key: use at least 16 bytes".to_string());
    }
    for p in raw.peers {
        match p.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => out.peers.push(IpAddr::V4(a)),
            _ => errors.push(format!("sync.peers: '{p}' is not an IPv4 address")),
        }
    }
    out
}

/// The ipvsadm option of a `method` key.
fn method_option(method: Option<&str>) -> Result<&'static str, String> {
    match method.map(str::to_ascii_lowercase).as_deref() {
        None | Some("dr" | "route" | "gatewaying" | "g") => Ok("-g"),
        Some("nat" | "masq" | "masquerading" | "m") => Ok("-m"),
        Some("tun" | "tunnel" | "ipip" | "i") => Ok("-i"),
        Some(other) => Err(format!("unknown method '{other}' (dr, nat or tun)")),
    }
}

/// One `[[service]]`: its `-A` line, then one `-a` line per real server, each parsed by
/// the ipvsadm parser and applied to `table`; its health settings go to `health`.
fn add_service(
    table: &mut ServiceTableSpec,
    health_config: &mut HealthConfig,
    i: usize,
    s: RawService,
    names: &Names,
    errors: &mut Vec<String>,
) {
    let key = format!("service[{i}]");
    let selector: Vec<String> = match (&s.tcp, &s.udp, s.fwmark) {
        (Some(a), None, None) => vec!["-t".into(), a.clone()],
        (None, Some(a), None) => vec!["-u".into(), a.clone()],
        (None, None, Some(m)) => {
            let mut v = vec!["-f".to_string(), m.to_string()];
            if s.ipv6 {
                v.push("-6".into());
            }
            v
        }
        _ => {
            errors.push(format!("{key}: give exactly one of tcp, udp or fwmark"));
            return;
        }
    };
    if s.ipv6 && s.fwmark.is_none() {
        errors.push(format!(
            "{key}.ipv6: only for fwmark services (an address service's family is its address's)"
        ));
        return;
    }
    let mut words = vec!["-A".to_string()];
    words.extend(selector.iter().cloned());
    if let Some(sched) = &s.scheduler {
        words.extend(["-s".to_string(), sched.clone()]);
    }
    match s.persistent {
        None | Some(Persistent::On(false)) => {}
        Some(Persistent::On(true)) => words.push("-p".into()),
        Some(Persistent::Seconds(secs)) => words.push(format!("-p{secs}")),
    }
    if let Some(Netmask(mask)) = &s.netmask {
        words.extend(["-M".to_string(), mask.clone()]);
    }
    if let Some(flags) = &s.flags {
        words.extend(["-b".to_string(), flags.clone()]);
    }
    if s.ops {
        words.push("-o".into());
    }
    // When the service is refused its real servers are still read, so every mistake in
    // them is reported too, but none is applied.
    let added = match ipvsadm::parse(&words, "xvs", names) {
        Ok(Command::Edit(mut edit @ Edit::AddService { .. })) => {
            if let (Edit::AddService { service }, Some(size)) = (&mut edit, s.mh_table_size) {
                service.mh_table_size = size;
            }
            if let Edit::AddService { service } = &mut edit {
                service.sloppy_tcp = s.sloppy_tcp;
            }
            match edit.apply_to(table) {
                Ok(()) => match edit {
                    Edit::AddService { service } => Some(service.addr),
                    _ => None,
                },
                Err(e) => {
                    errors.push(format!("{key}: {}", file_message(&edit, &e)));
                    None
                }
            }
        }
        Ok(other) => {
            errors.push(format!("{key}: not a service ({other:?})"));
            None
        }
        Err(e) => {
            errors.push(format!("{key}: {}", e.message));
            None
        }
    };
    let service_ok = added.is_some();
    let mut dests: Vec<(String, DestSpec, Option<RawCheck>)> = Vec::new();
    for (j, rs) in s.real_server.into_iter().enumerate() {
        let key = format!("{key}.real_server[{j}]");
        let method = match method_option(rs.method.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!("{key}.method: {e}"));
                continue;
            }
        };
        if rs.address.is_empty() {
            errors.push(format!("{key}.address: missing"));
            continue;
        }
        let mut words = vec!["-a".to_string()];
        words.extend(selector.iter().cloned());
        words.extend(["-r".to_string(), rs.address.clone(), method.to_string()]);
        for (opt, value) in [
            ("-w", rs.weight),
            ("-x", rs.upper_threshold),
            ("-y", rs.lower_threshold),
        ] {
            if let Some(v) = value {
                words.extend([opt.to_string(), v.to_string()]);
            }
        }
        match ipvsadm::parse(&words, "xvs", names) {
            Ok(Command::Edit(edit)) if service_ok => match edit.apply_to(table) {
                Ok(()) => {
                    if let Edit::AddDest { dest, .. } = edit {
                        dests.push((key, dest, rs.check));
                    }
                }
                Err(e) => errors.push(format!("{key}: {}", file_message(&edit, &e))),
            },
            Ok(Command::Edit(_)) => {}
            Ok(other) => errors.push(format!("{key}: not a real server ({other:?})")),
            Err(e) => errors.push(format!("{key}: {}", e.message)),
        }
    }
    let Some(service) = added else {
        return;
    };
    let policy = ServiceHealthRaw {
        check: s.check,
        on_failure: s.on_failure,
        sorry_server: s.sorry_server,
        sorry_method: s.sorry_method,
        passive_check: s.passive_check,
    };
    if let Some(h) = service_health(
        table, service, &selector, &key, policy, &dests, names, errors,
    ) {
        health_config.services.push(h);
    }
}

/// The health keys of one `[[service]]`.
struct ServiceHealthRaw {
    check: Option<RawCheck>,
    on_failure: Option<String>,
    sorry_server: Option<String>,
    sorry_method: Option<String>,
    passive_check: Option<RawPassive>,
}

/// Validates a service's health settings against its real servers `dests` (each with
/// its key and its own check); `None` if it has none (or they are invalid).
#[allow(clippy::too_many_arguments)]
fn service_health(
    table: &ServiceTableSpec,
    service: ServiceAddr,
    selector: &[String],
    key: &str,
    raw: ServiceHealthRaw,
    dests: &[(String, DestSpec, Option<RawCheck>)],
    names: &Names,
    errors: &mut Vec<String>,
) -> Option<ServiceHealth> {
    let before = errors.len();
    let on_failure = health::on_failure(
        raw.on_failure.as_deref(),
        &format!("{key}.on_failure"),
        errors,
    );
    let mut checks = Vec::new();
    // The service's check is read once for its own errors, then for each real server
    // without a check of its own (whose port it defaults to).
    if let Some(check) = &raw.check {
        let port = match service {
            ServiceAddr::Inet { port, .. } if port != 0 => port,
            _ => 80,
        };
        let probe_dest = DestSpec {
            port,
            ..dests.first().map(|d| d.1).unwrap_or(DestSpec {
                addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
                port,
                method: xvs_dataplane::service::spec::ForwardMethod::Route,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            })
        };
        health::check_spec(check, &format!("{key}.check"), &probe_dest, errors);
    }
    for (dest_key, dest, own) in dests {
        let (check, check_key) = match (own, &raw.check) {
            (Some(own), _) => (own, format!("{dest_key}.check")),
            (None, Some(shared)) => (shared, format!("{key}.check")),
            (None, None) => continue,
        };
        let mut found = Vec::new();
        if let Some(spec) = health::check_spec(check, &check_key, dest, &mut found) {
            checks.push((DestKey::of(service, dest), spec));
        }
        for e in found {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    let sorry = raw.sorry_server.as_ref().and_then(|address| {
        let key = format!("{key}.sorry_server");
        let default_method = dests.first().map(|d| d.1.method.option()).unwrap_or("-g");
        let method = match raw.sorry_method.as_deref() {
            None => default_method,
            Some(m) => match method_option(Some(m)) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(format!("{key}.sorry_method: {e}"));
                    return None;
                }
            },
        };
        let mut words = vec!["-a".to_string()];
        words.extend(selector.iter().cloned());
        words.extend(["-r".to_string(), address.clone(), method.to_string()]);
        let dest = match ipvsadm::parse(&words, "xvs", names) {
            Ok(Command::Edit(Edit::AddDest { dest, .. })) => dest,
            Ok(other) => {
                errors.push(format!("{key}: not a real server ({other:?})"));
                return None;
            }
            Err(e) => {
                errors.push(format!("{key}: {}", e.message));
                return None;
            }
        };
        let edit = Edit::AddDest { service, dest };
        if let Err(e) = edit.apply_to(&mut table.clone()) {
            let message = match e {
                xvs_dataplane::service::spec::EditError::DestExists => {
                    "is also a real server of the service".to_string()
                }
                other => file_message(&edit, &other),
            };
            errors.push(format!("{key}: {message}"));
            return None;
        }
        Some(dest)
    });
    if raw.sorry_method.is_some() && raw.sorry_server.is_none() {
        errors.push(format!("{key}.sorry_method: only with a sorry_server"));
    }
    let passive = raw.passive_check.as_ref().and_then(|p| {
        let key = format!("{key}.passive_check");
        match service {
            ServiceAddr::Inet {
                protocol: xvs_dataplane::service::spec::Protocol::Tcp,
                ..
            } => health::passive_spec(p, &key, errors),
            _ => {
                errors.push(format!(
                    "{key}: only for TCP services (it watches connections in SYN_RECV)"
                ));
                None
            }
        }
    });
    if errors.len() != before
        || (checks.is_empty() && sorry.is_none() && passive.is_none() && raw.on_failure.is_none())
    {
        return None;
    }
    Some(ServiceHealth {
        service,
        on_failure,
        sorry,
        passive,
        checks,
    })
}

/// ipvsadm's message, except for an unknown scheduler, where a file's reader is better
/// served by the list of known ones than by ipvsadm's "Scheduler or persistence engine
/// not found".
fn file_message(edit: &Edit, e: &xvs_dataplane::service::spec::EditError) -> String {
    match e {
        xvs_dataplane::service::spec::EditError::Scheduler(s) => format!("scheduler: {s}"),
        other => edit.error_message(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::{Director, TableOnlyDirector};

    fn table_of(lines: &[&str]) -> ServiceTableSpec {
        let mut d = TableOnlyDirector::default();
        for line in lines {
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let Command::Edit(edit) = ipvsadm::parse(&words, "t", &Names::none()).unwrap() else {
                panic!("{line}")
            };
            d.apply(edit).unwrap();
        }
        d.table().clone()
    }

    #[test]
    fn sync_section_takes_ipvsadms_options_and_xvss_additions() {
        let c = parse_str(
            "[sync]\nthreshold = 2\nperiod = 10\nresync = true\nkey = \"0123456789abcdef\"\npeers = [\"10.0.0.2\"]\n\
             [sync.master]\ninterface = \"eth1\"\nsyncid = 7\n[sync.backup]\ngroup = \"239.0.0.1\"\nport = 9000\n",
            &Names::none(),
        )
        .unwrap();
        let s = c.daemon.sync;
        assert_eq!(
            s.policy,
            SyncPolicy {
                threshold: 2,
                period: 10
            }
        );
        assert!(s.resync);
        assert_eq!(s.key.as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(s.peers, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let master = s.master.unwrap();
        assert_eq!(
            (master.interface.as_deref(), master.syncid),
            (Some("eth1"), Some(7))
        );
        let backup = s.backup.unwrap().settings("eth0");
        assert_eq!(
            (
                backup.interface.as_str(),
                backup.port,
                backup.group.to_string().as_str()
            ),
            ("eth0", 9000, "239.0.0.1")
        );
        let errors = parse_str(
            "[sync]\nthreshold = 60\nkey = \"short\"\npeers = [\"nope\"]\n[sync.master]\nsyncid = 300\ngroup = \"10.0.0.1\"\n",
            &Names::none(),
        )
        .unwrap_err()
        .0;
        assert_eq!(
            errors,
            vec![
                "sync.master.syncid: 300 is outside 0..=255",
                "sync.master.group: '10.0.0.1' is not an IPv4 multicast address",
                "sync.threshold: 60 must be below sync.period (50)",
                "sync.key: use at least 16 bytes",
                "sync.peers: 'nope' is not an IPv4 address",
            ]
        );
    }

    #[test]
    fn dr_example_reproduces_the_dr_seed() {
        let c = parse_str(include_str!("../../examples/dr.toml"), &Names::none()).unwrap();
        assert_eq!(
            c.table,
            table_of(&[
                "-A -t 172.16.21.10:80 -s rr",
                "-a -t 172.16.21.10:80 -r 192.168.40.12 -g -w 2",
                "-a -t 172.16.21.10:80 -r 192.168.40.13 -g -w 1",
            ])
        );
        assert_eq!(
            c.daemon.interfaces,
            Some(Interfaces::OneArm {
                iface: "eth1".into()
            })
        );
    }

    #[test]
    fn nat_example_reproduces_the_nat_seed() {
        let c = parse_str(include_str!("../../examples/nat.toml"), &Names::none()).unwrap();
        assert_eq!(
            c.table,
            table_of(&[
                "-A -t 192.168.0.11:80 -s lc -p 300",
                "-a -t 192.168.0.11:80 -r 10.168.0.94:80 -m -w 1",
                "-a -t 192.168.0.11:80 -r 10.168.0.95:80 -m -w 1",
            ])
        );
        assert!(matches!(
            c.daemon.interfaces,
            Some(Interfaces::TwoArm { .. })
        ));
    }

    #[test]
    fn tun_example_parses() {
        let c = parse_str(include_str!("../../examples/tun.toml"), &Names::none()).unwrap();
        assert_eq!(
            c.table,
            table_of(&[
                "-A -t 10.168.0.91:80 -s wrr",
                "-a -t 10.168.0.91:80 -r 10.168.1.94 -i -w 1",
                "-a -t 10.168.0.91:80 -r 10.168.2.95 -i -w 1",
            ])
        );
        assert!(c.daemon.director_address.is_some());
    }

    // Scale-out keys (sloppy_tcp): kept together, apart from the other options' tests.
    #[test]
    fn sloppy_tcp_is_global_or_per_service_and_sloppy_sctp_is_refused() {
        let text = "[options]\nsloppy_tcp = true\n\
                    [[service]]\ntcp = \"10.0.0.1:80\"\nscheduler = \"mh\"\nsloppy_tcp = true\n\
                    [[service]]\ntcp = \"10.0.0.1:81\"\nscheduler = \"mh\"\n";
        let c = parse_str(text, &Names::none()).unwrap();
        assert!(c.daemon.options.sloppy_tcp);
        assert!(c.table.services[0].sloppy_tcp);
        assert!(!c.table.services[1].sloppy_tcp);
        let e = parse_str("[options]\nsloppy_sctp = true\n", &Names::none()).unwrap_err();
        assert_eq!(
            e.0,
            vec!["options.sloppy_sctp: xvs has no SCTP services (sloppy_tcp is for TCP)"]
        );
        let e = parse_str("[options]\nsloppy_tcp = 1\n", &Names::none()).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].contains("sloppy_tcp"), "{e}");
    }

    #[test]
    fn announce_section_with_defaults_and_its_errors() {
        let c = parse_str("[announce]\n", &Names::none()).unwrap();
        assert_eq!(c.daemon.announce, Some(AnnounceConfig::default()));
        assert_eq!(parse_str("", &Names::none()).unwrap().daemon.announce, None);
        let c = parse_str(
            "[announce]\ndevice = \"vip1\"\naddresses = [\"172.16.21.10\"]\ndrain = true\ninterval_ms = 50\nstop_grace_ms = 0\n",
            &Names::none(),
        )
        .unwrap();
        let a = c.daemon.announce.unwrap();
        assert_eq!(
            (a.device.as_str(), a.addresses.len(), a.drain, a.interval_ms),
            ("vip1", 1, true, 50)
        );
        assert_eq!(a.stop_grace_ms, 0);
        let e = parse_str(
            "[announce]\ndevice = \"a-very-long-device-name\"\naddresses = [\"::1\"]\ninterval_ms = 5\nstop_grace_ms = 60001\n",
            &Names::none(),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(e.0[1].starts_with("announce.addresses: '::1'"), "{e}");
    }

    #[test]
    fn full_example_sets_every_key() {
        let c = parse_str(include_str!("../../examples/full.toml"), &Names::none()).unwrap();
        assert_eq!(c.daemon.queues, Some(2));
        assert_eq!(c.daemon.cores, Some(vec![2, 3]));
        assert_eq!(c.daemon.conn_table_size, 1 << 20);
        assert_eq!(
            c.daemon.timeouts,
            Timeouts {
                tcp: 600,
                tcpfin: 60,
                udp: 120
            }
        );
        assert!(c.daemon.options.expire_nodest_conn);
        assert_eq!(c.table.services.len(), 3);
        let mh = &c.table.services[2];
        assert_eq!(mh.scheduler, "mh");
        assert_eq!(mh.mh_table_size, 65_521);
        assert!(mh.flags.port);
        assert_eq!(c.table.services[0].dests[0].upper_threshold, 1000);
        let health = &c.health;
        assert_eq!(health.services.len(), 2);
        let web = &health.services[0];
        assert_eq!(web.on_failure, crate::health::spec::OnFailure::Quiesce);
        let sorry = web.sorry.unwrap();
        assert_eq!(
            (sorry.port, sorry.method),
            (8443, xvs_dataplane::service::spec::ForwardMethod::Masq)
        );
        assert_eq!(web.passive.unwrap().min_stuck, 2);
        assert_eq!(web.checks.len(), 2);
        let (_, shared) = &web.checks[0];
        assert_eq!(shared.probe.kind(), "https");
        assert_eq!((shared.rise, shared.fall, shared.port), (2, 3, 443));
        assert_eq!(shared.interval, std::time::Duration::from_millis(2500));
        let (key, own) = &web.checks[1];
        assert_eq!(
            (key.port, own.port, own.probe.kind()),
            (443, 8443, "external")
        );
        assert_eq!(health.services[1].checks[0].1.probe.kind(), "udp");
        let sync = &c.daemon.sync;
        assert!(sync.resync && sync.key.is_some() && sync.peers.len() == 1);
        assert_eq!(sync.master.as_ref().unwrap().syncid, Some(7));
        assert!(sync.backup.is_some());
        assert_eq!(
            c.daemon.metrics.listen,
            Some("127.0.0.1:9111".parse().unwrap())
        );
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        assert_eq!(
            parse_str("", &Names::none()).unwrap().daemon.metrics.listen,
            None
        );
        let v6 = parse_str("[metrics]\nlisten = \"[::1]:9111\"\n", &Names::none()).unwrap();
        assert_eq!(
            v6.daemon.metrics.listen,
            Some("[::1]:9111".parse().unwrap())
        );
        for bad in ["localhost:9111", "127.0.0.1", ":9111"] {
            let errs = parse_str(&format!("[metrics]\nlisten = \"{bad}\"\n"), &Names::none())
                .unwrap_err()
                .0;
            assert_eq!(
                errs,
                vec![format!(
                    "metrics.listen: '{bad}' is not ADDRESS:PORT (e.g. 127.0.0.1:9111 or [::1]:9111)"
                )]
            );
        }
        let e = parse_str("[metrics]\nport = 9111\n", &Names::none()).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn errors_name_their_keys_and_all_are_reported() {
        let text = r#"
[daemon]
interface = "eth0"
external = "eth1"
director_address = "not-an-ip"

[timeouts]
tcp = 0

[[service]]
tcp = "10.0.0.1:80"
scheduler = "fastest"

[[service]]
tcp = "10.0.0.2:80"
[[service.real_server]]
address = "10.0.1.1"
weight = 70000
[[service.real_server]]
address = "10.0.1.2"
method = "carrier-pigeon"
[[service.real_server]]
address = "10.0.1.3"
[[service.real_server]]
address = "10.0.1.3"
"#;
        let errs = parse_str(text, &Names::none()).unwrap_err().0;
        let want = [
            "daemon.interface: give either",
            "daemon.director_address: 'not-an-ip' is not an IP address",
            "timeouts.tcp: 0 is outside",
            "service[0]: scheduler: unknown scheduler 'fastest' (known: rr wrr",
            "service[1].real_server[0]: illegal weight specified",
            "service[1].real_server[1].method: unknown method 'carrier-pigeon'",
            "service[1].real_server[3]: Destination already exists",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (e, w) in errs.iter().zip(want) {
            assert!(e.starts_with(w), "{e} / {w}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn health_keys_are_checked_against_their_service() {
        let text = r#"
[[service]]
udp = "10.0.0.1:53"
on_failure = "drop"
sorry_server = "10.0.1.1"
[service.passive_check]
syn_recv = 2
[[service.real_server]]
address = "10.0.1.1"
[service.real_server.check]
type = "udp"
path = "/"

[[service]]
tcp = "10.0.0.2:80"
sorry_method = "nat"
[service.check]
type = "http"
rise = 0
[[service.real_server]]
address = "10.0.1.2"
[[service.real_server]]
address = "10.0.1.3"
"#;
        let errs = parse_str(text, &Names::none()).unwrap_err().0;
        assert_eq!(
            errs,
            vec![
                "service[0].on_failure: unknown action 'drop' (quiesce or remove)",
                "service[0].real_server[0].check.path: only for http and https checks",
                "service[0].sorry_server: is also a real server of the service",
                "service[0].passive_check: only for TCP services (it watches connections in SYN_RECV)",
                "service[1].check.rise: 0 is outside 1..=1000",
                "service[1].sorry_method: only with a sorry_server",
            ]
        );
        let ok = parse_str(
            "[[service]]\ntcp = \"10.0.0.2:80\"\n[service.check]\ntype = \"tcp\"\n\
             [[service.real_server]]\naddress = \"10.0.1.2\"\n[[service.real_server]]\naddress = \"10.0.1.3\"\n\
             [service.real_server.check]\ntype = \"none\"\n",
            &Names::none(),
        )
        .unwrap();
        let checks: Vec<_> = ok
            .health
            .checks()
            .map(|(k, _)| k.addr.to_string())
            .collect();
        assert_eq!(
            checks,
            vec!["10.0.1.2"],
            "type none turns the service's check off"
        );
    }

    #[test]
    fn mark_rules_parse_both_families_and_ranges_and_name_their_keys_when_wrong() {
        let ok = parse_str(
            "[[mark]]\nmark = 1\nprotocol = \"tcp\"\ndestination = \"192.0.2.10\"\nports = [80, 443, \"8000-8100\"]\n\
             [[mark]]\nmark = 2\nprotocol = \"udp\"\ndestination = \"2001:db8::/64\"\nports = [\"1-65535\"]\n\
             [[service]]\nfwmark = 1\nscheduler = \"rr\"\npersistent = 300\n\
             [[service.real_server]]\naddress = \"10.0.0.2\"\nmethod = \"dr\"\n",
            &Names::none(),
        )
        .unwrap();
        let range = |a, b| PortRange::new(a, b).unwrap();
        assert_eq!(
            ok.daemon.marks,
            vec![
                MarkRule {
                    mark: 1,
                    protocol: Protocol::Tcp,
                    destination: "192.0.2.10".parse().unwrap(),
                    ports: vec![range(80, 80), range(443, 443), range(8000, 8100)],
                },
                MarkRule {
                    mark: 2,
                    protocol: Protocol::Udp,
                    destination: "2001:db8::/64".parse().unwrap(),
                    ports: vec![range(1, 65535)],
                },
            ]
        );
        assert_eq!(
            ok.table,
            table_of(&["-A -f 1 -s rr -p 300", "-a -f 1 -r 10.0.0.2 -g -w 1"])
        );
        let rule = |body: &str| refusal(&format!("[[mark]]\n{body}\n"));
        let full = |mark: &str, protocol: &str, destination: &str, ports: &str| {
            rule(&format!(
                "mark = {mark}\nprotocol = {protocol}\ndestination = {destination}\nports = {ports}"
            ))
        };
        assert_eq!(
            full(
                "0",
                "\"icmp\"",
                "\"192.0.2.10/24\"",
                "[0, \"90-80\", 70000]"
            ),
            vec![
                "mark[0].mark: 0 is not allowed (a number from 1 to 4294967295; 0 means unmarked)",
                "mark[0].protocol: 'icmp' is not allowed (a string: tcp or udp)",
                "mark[0].destination: '192.0.2.10/24': 192.0.2.10/24 has host bits set (the network is 192.0.2.0/24) (a string such as \"192.0.2.10\", \"192.0.2.0/24\" or \"2001:db8::/64\")",
                "mark[0].ports[0]: port 0 is not a destination port (ports are 1..=65535)",
                "mark[0].ports[1]: 90-80 is empty (the first port is higher)",
                "mark[0].ports[2]: 70000 is not a port (1 to 65535)",
            ]
        );
        assert_eq!(
            full("\"1\"", "\"tcp\"", "\"192.0.2.10\"", "[80]"),
            vec!["mark[0].mark: string \"1\" is not allowed (a number from 1 to 4294967295)"]
        );
        assert_eq!(
            full("1", "\"tcp\"", "\"192.0.2.10\"", "80"),
            vec![
                "mark[0].ports: integer 80 is not allowed (a list of ports and \"FIRST-LAST\" ranges such as [80, 443, \"8000-8100\"])"
            ]
        );
        assert_eq!(
            full("1", "\"tcp\"", "\"192.0.2.10\"", "[]"),
            vec![
                "mark[0].ports: the list is empty (ports and \"FIRST-LAST\" ranges such as [80, 443, \"8000-8100\"]; \"1-65535\" for all)"
            ]
        );
        assert!(rule("mark = 1\nprotocol = \"tcp\"\nports = [80]")[0].contains("destination"));
        assert!(
            rule(
                "mark = 1\nprotocol = \"tcp\"\ndestination = \"192.0.2.1\"\nports = [80]\nport = 1"
            )[0]
            .contains("port")
        );
        // One port, two marks: refused, naming both rules.
        assert_eq!(
            refusal(
                "[[mark]]\nmark = 1\nprotocol = \"tcp\"\ndestination = \"192.0.2.10\"\nports = [443]\n\
                 [[mark]]\nmark = 2\nprotocol = \"tcp\"\ndestination = \"192.0.2.10\"\nports = [\"400-500\"]\n"
            ),
            vec![
                "mark[1]: tcp 192.0.2.10 port 400-500 is marked 1 by mark[0] already (port 443); one destination port has one mark"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        let e = parse_str("[daemon]\nqueus = 2\n", &Names::none()).unwrap_err();
        assert!(e.to_string().contains("queus"), "{e}");
        let e = parse_str("[daemon]\nqueues = \"two\"\n", &Names::none()).unwrap_err();
        assert!(e.to_string().contains("queues"), "{e}");
        assert_eq!(
            parse_str("", &Names::none()).unwrap(),
            LoadedConfig::default()
        );
    }

    fn refusal(text: &str) -> Vec<String> {
        parse_str(text, &Names::none()).unwrap_err().0
    }

    #[test]
    fn worker_nice_is_a_nice_value_and_zero_by_default() {
        let nice = |text: &str| parse_str(text, &Names::none()).unwrap().daemon.worker_nice;
        assert_eq!(nice(""), 0);
        assert_eq!(nice("[daemon]\nworker_nice = -20\n"), -20);
        assert_eq!(nice("[daemon]\nworker_nice = 19\n"), 19);
        assert_eq!(
            refusal("[daemon]\nworker_nice = 20\n"),
            vec!["daemon.worker_nice: 20 is not allowed (a nice value from -20 to 19)"]
        );
        assert_eq!(
            refusal("[daemon]\nworker_nice = -21\n"),
            vec!["daemon.worker_nice: -21 is not allowed (a nice value from -20 to 19)"]
        );
        assert_eq!(
            refusal("[daemon]\nworker_nice = \"high\"\n"),
            vec![
                "daemon.worker_nice: string \"high\" is not allowed (a nice value from -20 to 19)"
            ]
        );
    }

    #[test]
    fn types_are_strict_and_refusals_use_xvsadms_words() {
        let rs =
            "[[service]]\ntcp = \"10.0.0.1:80\"\n[[service.real_server]]\naddress = \"10.0.0.2\"\n";
        assert_eq!(
            refusal(&format!("{rs}weight = \"5\"\n")),
            vec![
                "service[0].real_server[0].weight: illegal weight specified: string \"5\" is not allowed (a number from 0 to 65535)"
            ]
        );
        assert_eq!(
            refusal("[daemon]\ninterface = 5\n"),
            vec!["daemon.interface: integer 5 is not allowed (a string: an interface's name)"]
        );
        assert_eq!(
            refusal("[[service]]\ntcp = \"10.0.0.1:80\"\npersistent = \"yes\"\n"),
            vec![
                "service[0].persistent: invalid timeout value specified: string \"yes\" is not allowed (true, false or seconds from 1 to 2678400)"
            ]
        );
        assert_eq!(
            refusal("[[service]]\ntcp = 5\n"),
            vec![
                "service[0].tcp: illegal virtual server address[:port] specified: integer 5 is not allowed (a string such as \"172.16.21.10:80\" or \"[2001:db8::10]:80\")"
            ]
        );
        assert_eq!(
            refusal("[timeouts]\ntcp = \"900\"\n"),
            vec![
                "timeouts.tcp: invalid timeout value specified: string \"900\" is not allowed (seconds from 1 to 2678400)"
            ]
        );
        assert_eq!(
            refusal("[sync.master]\nsyncid = \"7\"\n"),
            vec![
                "sync.master.syncid: illegal syncid specified: string \"7\" is not allowed (a number from 0 to 255)"
            ]
        );
        assert_eq!(
            refusal("[options]\nexpire_nodest_conn = \"yes\"\n"),
            vec!["options.expire_nodest_conn: string \"yes\" is not allowed (true or false)"]
        );
        assert_eq!(
            refusal(
                "[[service]]\ntcp = \"10.0.0.1:80\"\n[service.check]\ntype = \"http\"\nstatus = \"200\"\n"
            ),
            vec![
                "service[0].check.status: string \"200\" is not allowed (an HTTP status such as 200, or a list such as [200, 204])"
            ]
        );
        assert_eq!(
            refusal("[daemon]\nqueues = -1\n"),
            vec!["daemon.queues: integer -1 is not allowed (a number from 1)"]
        );
        // A syntax error says where, in one line.
        assert_eq!(
            refusal("[daemon]\n[sync\n"),
            vec!["line 2: unclosed table, expected `]`"]
        );
        // What stays allowed: persistent true or seconds, an IPv6 prefix length as a number.
        let ok = parse_str(
            "[[service]]\ntcp = \"[2001:db8::1]:80\"\npersistent = 600\nnetmask = 64\n",
            &Names::none(),
        )
        .unwrap();
        assert_eq!(
            ok.table,
            table_of(&["-A -t [2001:db8::1]:80 -s wlc -p 600 -M 64"])
        );
    }

    #[test]
    fn no_byte_of_the_file_reaches_a_message_unescaped() {
        // TOML escapes put control characters into values; messages show them escaped.
        let errs = refusal("[[service]]\ntcp = \"10.0.0.1:80\"\nscheduler = \"\\u001b[2Jx\"\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("service[0]: scheduler: unknown scheduler '\\u{1b}[2Jx'"),
            "{errs:?}"
        );
        let key = refusal("[daemon]\n\"\\u0007\" = 1\n");
        assert!(
            !key[0].contains('\u{7}') && key[0].contains("\\u{7}"),
            "{key:?}"
        );
        // Raw control characters and binary files are not read at all.
        assert_eq!(
            refusal("[daemon]\ninterface = \"eth0\u{1b}[2J\"\n"),
            vec!["not a text file: line 2 holds the control character U+001B"]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        std::fs::write(&path, b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe").unwrap();
        assert_eq!(
            load(&path).unwrap_err().0,
            vec!["not a text file: line 1 holds a byte that is not UTF-8 (0xff)"]
        );
        std::fs::write(&path, b"# notes\n\xff\xfe[daemon]\n").unwrap();
        assert_eq!(
            load(&path).unwrap_err().0,
            vec!["not a text file: line 2 holds a byte that is not UTF-8 (0xff)"]
        );
    }

    #[test]
    fn services_given_tells_an_explicit_empty_list_from_none() {
        assert!(!parse_str("", &Names::none()).unwrap().services_given);
        assert!(
            !parse_str("[daemon]\ninterface = \"eth0\"\n", &Names::none())
                .unwrap()
                .services_given
        );
        let none = parse_str("service = []\n", &Names::none()).unwrap();
        assert!(none.services_given && none.table.services.is_empty());
        assert!(
            parse_str(include_str!("../../examples/dr.toml"), &Names::none())
                .unwrap()
                .services_given
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        std::fs::write(&path, include_str!("../../examples/dr.toml")).unwrap();
        assert_eq!(load(&path).unwrap().table.services.len(), 1);
        let missing = load(&dir.path().join("nope.toml")).unwrap_err();
        assert_eq!(missing.0.len(), 1);
    }
}
